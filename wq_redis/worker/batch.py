"""Short PythonTasks run back to back in one warm child: one message each way per batch.

A worker that sees its tasks finish quickly claims each task with followers of the same
queue (claim.lua), and runs the ones that need nothing but a function call (no files, no
time limits, no enforced limits: see ``quick_spec``) as one batch.  What a batch costs
per task is then the call itself, not a claim round trip, a sandbox, a message to the
child and a delivery each.

A cancel or a lost lease of any task of a batch kills the child: the batch's cancelled
tasks end without a result and the others are handed back (``Ending.HANDED_BACK``), to run again
without counting an attempt.  A child that dies (a segfault in one call) leaves the
batch to run task by task, so the failure lands on the task that caused it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocol import packing
from ..protocol.serialize import NO_ARGS, EnvelopeError, function_digest, task_spec
from ..protocol.signing import SignatureError
from ..protocol.store import Claimed, TaskRefused
from .channel import out_of_band
from .pool import ChildDied, ChildGone, Interrupted, WarmProcess
from .runner import Outcome, Slot, named_host, python_outcome, result_fields
from .waiting import CancelSignal

# Spec entries that need the per-task path (sandbox files, limits watched while it runs).
_NEEDS_OWN_RUN = ("inputs", "outputs", "output_dirs", "running_time_max", "end_time", "enforce")


class Attempt:
    """A claimed attempt this worker holds a lease on, from claim until delivery."""

    __slots__ = ("_stop", "cancelled", "fields", "members", "task_id", "token")

    def __init__(self, claimed: Claimed) -> None:
        self.task_id = claimed.task_id
        self.token = claimed.token
        self.fields = claimed.fields
        self.members: list[tuple[int, bytes | None]] = []  # a pack's, read before it runs (Worker._readable)
        self.cancelled = False
        self._stop: Callable[[], None] | None = None

    @property
    def args(self) -> bytes | None:
        """The pickled arguments (None: the call has none)."""
        return self.fields.get(b"args")

    def cancel(self) -> None:
        """Lease lost or task cancelled: stop it if it runs, skip it if it has not started."""
        self.cancelled = True
        stop = self._stop
        if stop is not None:
            stop()

    def stop_with(self, stop: Callable[[], None] | None) -> None:
        """What ``cancel`` calls while the attempt runs (None once it ended)."""
        self._stop = stop
        if stop is not None and self.cancelled:
            stop()


_quick_specs: dict[bytes | None, dict[str, Any] | None] = {}  # by the "spec" field: tasks of a batch share one


def quick_spec(fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The spec of a task (or pack, see packing.py) that can run in a batch, else None
    (read-only: it is shared)."""
    if b"fn" not in fields or (packing.MEMBERS not in fields and b":" in b"\n".join(fields)):
        return None  # "in:NAME" etc.: input files
    data = fields.get(b"spec")
    if data in _quick_specs:
        return _quick_specs[data]
    try:
        spec: dict[str, Any] | None = task_spec(fields)
    except EnvelopeError:
        return None  # the per-task path reports it
    if spec is not None and (spec.get("kind") != "py" or any(spec.get(name) for name in _NEEDS_OWN_RUN)):
        spec = None
    if len(_quick_specs) >= 256:
        _quick_specs.clear()
    _quick_specs[data] = spec
    return spec


BATCH_SECONDS = 0.02  # short tasks are claimed in batches of about this much work
MAX_FOLLOWERS = 255  # tasks that may follow one claimed task on its resources


class Pace:
    """The recent seconds per task of a slot (a moving average), which sets how many tasks
    a claim may bring to follow each one: enough for about BATCH_SECONDS of work, none
    until a task was seen to finish (long tasks are never held back from idle workers)."""

    def __init__(self, seconds_per_task: float | None = None) -> None:
        self.seconds_per_task = seconds_per_task

    def record(self, tasks: int, seconds: float) -> None:
        """Fold a finished run of ``tasks`` tasks in ``seconds`` into the pace."""
        pace = seconds / tasks
        self.seconds_per_task = pace if self.seconds_per_task is None else 0.5 * (self.seconds_per_task + pace)

    def followers(self) -> int:
        pace = self.seconds_per_task
        if pace is None:
            return 0
        return max(0, min(MAX_FOLLOWERS, int(BATCH_SECONDS / max(pace, 1e-6)) - 1))


class PackMember:
    """One call of a claimed pack: what a batch needs of a task.  ``fields`` are the
    pack's shared fields (one dict for all its members), ``args`` the member's own."""

    __slots__ = ("args", "fields", "task_id")

    def __init__(self, task_id: int, fields: dict[bytes, bytes], args: bytes | None) -> None:
        self.task_id = task_id
        self.fields = fields
        self.args = args


def calls_of(attempts: list[Attempt]) -> tuple[list[Attempt | PackMember], list[int]]:
    """The calls a batch of attempts makes (a pack's members each one) and, per call, the
    index of its attempt."""
    calls: list[Attempt | PackMember] = []
    owners: list[int] = []
    for index, attempt in enumerate(attempts):
        if packing.MEMBERS in attempt.fields:
            shared = packing.shared_fields(attempt.fields)
            for member_id, args in attempt.members:
                calls.append(PackMember(member_id, shared, args))
                owners.append(index)
        else:
            calls.append(attempt)
            owners.append(index)
    return calls, owners


def attempt_results(
    attempts: list[Attempt], calls: list[Attempt | PackMember], owners: list[int], fields: list[dict[str, Any] | None]
) -> list[dict[str, Any] | None]:
    """Per attempt, its result fields from its calls' (a pack's: ``packing.pack_results``)."""
    members: list[list[tuple[int, dict[str, Any]]]] = [[] for _ in attempts]
    out: list[dict[str, Any] | None] = [None] * len(attempts)
    for call, owner, result in zip(calls, owners, fields):
        if isinstance(call, PackMember):
            if result is not None:
                members[owner].append((call.task_id, result))
        else:
            out[owner] = result
    for index, attempt in enumerate(attempts):
        if packing.MEMBERS in attempt.fields:
            out[index] = packing.pack_results(members[index])
    return out


class Ending(enum.Enum):
    DONE = "done"  # every attempt has its result fields
    HANDED_BACK = "handed back"  # cancelled ones have none; give the others back
    RUN_ONE_BY_ONE = "one by one"  # the child died: run them singly to find the culprit


@dataclass
class BatchResult:
    ending: Ending
    fields: list[dict[str, Any] | None] = field(default_factory=list)  # per attempt, in order


class QuickBatch:
    """One batch of quick attempts on one slot's resources (with a secret, each one's
    hash verified as a whole before: ``Worker._verified``)."""

    def __init__(
        self,
        attempts: list[Attempt | PackMember],
        specs: list[dict[str, Any]],
        slot: Slot,
        while_running: Callable[[], None] | None = None,
    ) -> None:
        self.attempts = attempts
        self.while_running = while_running  # called once the child has the batch
        self.specs = specs
        self.slot = slot
        self.signal = CancelSignal()

    def stop(self) -> None:
        self.signal.set()

    def close(self) -> None:
        self.signal.close()

    def run(self) -> BatchResult:
        fields: list[dict[str, Any] | None] = [None] * len(self.attempts)
        calls, slots = [], []
        no_env: dict[str, Any] = {}
        digests: dict[int, str] = {}  # by id(fields): a pack's members share their fields
        for index, (attempt, spec) in enumerate(zip(self.attempts, self.specs)):
            digest = digests.get(id(attempt.fields))
            if digest is None:
                digest = digests[id(attempt.fields)] = function_digest(attempt.fields)
            calls.append((attempt.task_id, digest, out_of_band(attempt.args or NO_ARGS), spec.get("env") or no_env))
            slots.append(index)
        if not calls:
            return BatchResult(Ending.DONE, fields)
        try:
            replies = self._call(calls)
        except Interrupted:
            return BatchResult(Ending.HANDED_BACK)
        except ChildDied:
            return BatchResult(Ending.RUN_ONE_BY_ONE)
        if replies is None:
            return BatchResult(Ending.RUN_ONE_BY_ONE)
        for index, reply in zip(slots, replies):
            fields[index] = self._fields(self.attempts[index], python_outcome(reply), reply["wall"])
        return BatchResult(Ending.DONE, fields)

    def _call(self, calls: list[tuple[int, str, bytes | None, dict[str, Any]]]) -> list[dict[str, Any]] | None:
        """The replies, or None when the batch must run one by one (ChildDied and
        Interrupted go to ``run``)."""

        def call(proc: WarmProcess) -> list[dict[str, Any]]:
            # The child's own sandbox, made once: it empties it after every call, and a
            # directory made and removed per batch cost ~90 us on our disks.
            sandbox = proc.sandbox_in(self.slot.workdir)
            message = {"calls": calls, "env": self.slot.environment(sandbox), "cwd": sandbox}
            return proc.call_batch(message, self.signal.read_fd, self.slot.fetch_function, self.while_running)

        try:
            return self.slot.pool.call_with_child(self.slot.gpu_ids, call)
        except ChildGone:
            return None
        except (SignatureError, TaskRefused):  # a function body not the one its tasks
            return None  # name, too large or unreadable: one by one, each such task fails on its own

    def _fields(self, attempt: Attempt | PackMember, outcome: Outcome, wall: float) -> dict[str, Any]:
        return result_fields(
            attempt.task_id, outcome, {}, wall, self.slot.max_result_bytes, self.slot.signer, named_host(attempt.fields)
        )
