"""Packs: short PythonTasks of one ``submit_many`` stored, claimed and delivered as one.

Why: every task with a hash of its own costs Redis a few Lua calls at each step of its
life (submit, claim, complete, retrieve), about 30 us per task on a small machine (Redis'
per-script times of ``python -m bench.profile_wq --phases per_call``): more than a short
call's run.  A pack is one hash for up to ``PACK_TASKS`` tasks that share
everything but their arguments (function, resources, tag, category, retries, priority):
the steps run once per pack, and each member still has its own id, result, output,
measured resources and cancel.

Packs are made only of calls to a function the manager has seen finish quickly: how
many go in one is client/packs.py's (``PackPlanner``).  A function not
seen yet, or a slow one, is never packed, so a pack never holds long tasks back from idle
workers.  Only calls that a worker runs in a batch are packed (no files, limits, env or
signatures: see ``packable``).

Fields of a pack's hash besides a task's usual ones (wire.py):
  n members, pa their ids and pickled arguments (one value: ``dump``);
  pc:ID a member cancelled (before or while the pack ran), nc how many are;
  once run: pr the members' result fields (one value), nf how many failed and fids
  their ids (so scripts count failures without reading pr), vks the keys of members'
  large return values (each stored beside, like "vk").
Counts in stats are in tasks: the scripts keep pack_waiting:MEMBER, pack_running:MEMBER
and pack_done in the stats hash (each pack's live members beyond its first).
Values are pickles of plain data only, read by ``load``, which refuses anything else: a
hash in Redis never makes the worker's or the manager's process run code.  With a secret
nothing is packed, and packs are never read: a worker with a secret checks a claimed
hash's signature, which covers ``n`` and ``pa``, before it reads them (no pack verifies),
and a manager with a secret hands a pack back as one failed task (``unread``).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Sequence
from typing import Any

from .codes import Result
from .fields import (
    ARGS_B,
    ERROR_B,
    PACK_CANCELLED_B,
    PACK_FAILED,
    PACK_FAILED_B,
    PACK_FAILED_IDS,
    PACK_FAILED_IDS_B,
    PACK_RESULTS,
    PACK_VALUE_KEYS_B,
    RESULT,
    RESULT_B,
    VALUE_B,
    VALUE_KEY_B,
    VALUE_SIGNATURE_B,
)
from .fields import PACK_ARGS_B as ARGS  # (the names other layers know a pack's fields by)
from .fields import PACK_CANCELLED_MEMBER_B as CANCELLED
from .fields import PACK_RESULTS_B as RESULTS
from .fields import PACK_SIZE_B as MEMBERS

_PACK_FIELDS = frozenset(
    {MEMBERS, ARGS, RESULTS, PACK_CANCELLED_B, PACK_FAILED_B, PACK_FAILED_IDS_B, PACK_VALUE_KEYS_B}
)


class _PlainData(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a pack's value names {module}.{name}: only plain data is read")


def dump(value: Any) -> bytes:
    """A pack's value (member arguments or results): plain data, pickled."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def load(data: bytes) -> Any:
    """A value written by ``dump``; anything that would import or call is refused."""
    return _PlainData(io.BytesIO(data)).load()


def live_count(fields: dict[bytes, bytes]) -> int:
    """The tasks a claimed hash stands for: a pack's members not cancelled, else 1 (also
    for counts that are not numbers: another client's garbage, which claim.lua refuses,
    must not stop the worker that counts it)."""
    count = fields.get(MEMBERS)
    if count is None:
        return 1
    try:
        return max(int(count) - int(fields.get(PACK_CANCELLED_B, 0)), 1)
    except ValueError:
        return 1


def cancelled_ids(fields: dict[bytes, bytes]) -> set[int]:
    return {int(name[len(CANCELLED) :]) for name in fields if name.startswith(CANCELLED)}


def member_args(fields: dict[bytes, bytes]) -> list[tuple[int, bytes | None]]:
    """A pack's live members: (id, pickled arguments or None), in id order."""
    cancelled = cancelled_ids(fields) if PACK_CANCELLED_B in fields else ()
    return [(member_id, args or None) for member_id, args in load(fields[ARGS]) if member_id not in cancelled]


def claimed_members(fields: dict[bytes, bytes]) -> list[tuple[int, bytes | None]]:
    """``member_args`` of a claimed pack, checked: ValueError saying what is wrong when its
    members cannot be read (another client's garbage), so that the worker fails that pack
    alone, before running anything of it."""
    if ARGS not in fields:
        raise ValueError("field n makes it a pack, but it has no members (field pa)")
    try:
        members = member_args(fields)
    except Exception as exc:  # (pickle errors, wrong shapes: any of them)
        raise ValueError(f"its members (field pa) do not load: {exc!r}") from None
    for member in members:
        if not (type(member[0]) is int and (member[1] is None or type(member[1]) is bytes)):
            raise ValueError(f"its members (field pa) hold {member!r}, not (id, pickled arguments)")
    return members


def member_ids(fields: dict[bytes, bytes]) -> list[int]:
    """The members of a pack not cancelled, in id order."""
    return [member_id for member_id, _ in member_args(fields)]


def shared_fields(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """A pack's fields that are every member's: function, spec, lease, worker, times."""
    return {
        name: value for name, value in fields.items() if name not in _PACK_FIELDS and not name.startswith(CANCELLED)
    }


def member_rows(pack_id: int, fields: dict[bytes, bytes]) -> list[tuple[int, dict[bytes, bytes]]]:
    """A finished pack as its members' (id, fields), as if each had a hash of its own.

    Members cancelled are left out.  A pack that ended as a whole (its lease lost with
    no retry left) gives each member its own failure.  An unreadable pack (not written by
    wq-redis) fails its members, or itself when even their ids cannot be read: it is
    handed out all the same, so it never blocks the tasks behind it."""
    shared = shared_fields(fields)
    try:
        results = fields.get(RESULTS)
        if results is None:
            return [(member_id, dict(shared)) for member_id in member_ids(fields)]
        cancelled = cancelled_ids(fields) if PACK_CANCELLED_B in fields else ()
        return [(member_id, {**shared, **member}) for member_id, member in load(results) if member_id not in cancelled]
    except Exception as exc:  # (pickle errors, wrong shapes: any of them)
        failure = {**shared, RESULT_B: b"%d" % Result.UNKNOWN, ERROR_B: f"unreadable pack of tasks: {exc!r}".encode()}
        try:
            return [(member_id, dict(failure)) for member_id in member_ids(fields)]
        except Exception:
            return [(pack_id, failure)]


def unread(pack_id: int, fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """A pack's hash as one failed task, nothing of its members or results read: what a
    manager with a secret makes of a pack.  It never submits one (packs are not signed),
    so a pack is a task altered by someone else; its own failure (a worker's refusal) is
    kept in the message."""
    kept = {name: value for name, value in shared_fields(fields).items() if name not in _RESULT_VALUE_FIELDS}
    said = fields.get(ERROR_B, b"").decode(errors="replace")
    error = (
        f"refused: task {pack_id} came back as a pack of tasks (fields n/pa), which a manager with a "
        "secret never submits: its members and results were not unpickled"
    )
    kept[RESULT_B] = b"%d" % Result.UNKNOWN
    kept[ERROR_B] = (error + (f"; the worker said: {said}" if said else "")).encode()
    return kept


_RESULT_VALUE_FIELDS = frozenset({VALUE_B, VALUE_KEY_B, VALUE_SIGNATURE_B})


def member_fields(
    fields: dict[bytes, bytes], members: list[tuple[int, bytes | None]]
) -> Iterable[tuple[int, dict[bytes, bytes]]]:
    """A claimed pack as its ``members``' (``claimed_members``) (id, fields) to run: shared
    fields plus arguments."""
    shared = shared_fields(fields)
    for member_id, args in members:
        member = dict(shared)
        if args:
            member[ARGS_B] = args
        yield member_id, member


_NAMES: dict[str, bytes] = {}


def result_value(fields: dict[str, Any]) -> dict[bytes, bytes]:
    """A member's result fields (``runner.result_fields``) as the bytes stored for it."""
    out = {}
    for name, value in fields.items():
        kind = type(value)
        if kind is str:
            value = value.encode()
        elif kind is int:
            value = b"%d" % value
        elif kind is memoryview:
            value = bytes(value)
        key = _NAMES.get(name)
        if key is None:
            key = _NAMES[name] = name.encode()
        out[key] = value
    return out


def pack_results(results: Sequence[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """A pack's result fields from its members' (id, result fields): ``pr`` the list of
    them (``store.complete`` turns it into one value), ``nf`` and ``fids`` the failures."""
    failed = [member_id for member_id, fields in results if int(fields[RESULT]) != 0]
    out: dict[str, Any] = {PACK_RESULTS: list(results), PACK_FAILED: len(failed)}
    if failed:
        out[PACK_FAILED_IDS] = " ".join(map(str, failed))
    return out
