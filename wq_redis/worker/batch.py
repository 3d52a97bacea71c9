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
from ..protocol.fields import ARGS_B
from ..protocol.serialize import NO_ARGS, function_digest
from ..protocol.signing import SignatureError
from ..protocol.store import Claimed, TaskRefused
from .child.channel import out_of_band
from .child.messages import RunBatch
from .child.results import Outcome, named_host, result_fields
from .pool import ChildDied, ChildGone, Interrupted, WarmProcess
from .runner import Slot
from .waiting import CancelSignal


class Attempt:
    """A claimed attempt this worker holds a lease on, from claim until delivery."""

    __slots__ = ("_stop", "cancelled", "fields", "member", "members", "task_id", "token")

    def __init__(self, claimed: Claimed) -> None:
        self.task_id = claimed.task_id
        self.token = claimed.token
        self.member = claimed.member  # its ready queue "CLASS|TAG"
        self.fields = claimed.fields
        self.members: list[tuple[int, bytes | None]] = []  # a pack's, read before it runs (Worker._readable)
        self.cancelled = False
        self._stop: Callable[[], None] | None = None

    @property
    def args(self) -> bytes | None:
        """The pickled arguments (None: the call has none)."""
        return self.fields.get(ARGS_B)

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
        task_ids, digests, args, task_envs = [], [], [], []
        no_env: dict[str, Any] = {}
        by_fields: dict[int, str] = {}  # digests by id(fields): a pack's members share their fields
        for attempt, spec in zip(self.attempts, self.specs):
            digest = by_fields.get(id(attempt.fields))
            if digest is None:
                digest = by_fields[id(attempt.fields)] = function_digest(attempt.fields)
            task_ids.append(attempt.task_id)
            digests.append(digest)
            args.append(out_of_band(attempt.args or NO_ARGS))
            task_envs.append(spec.get("env") or no_env)
        if not task_ids:
            return BatchResult(Ending.DONE, fields)
        try:
            answers = self._call(task_ids, digests, args, task_envs)
        except Interrupted:
            return BatchResult(Ending.HANDED_BACK)
        except ChildDied:
            return BatchResult(Ending.RUN_ONE_BY_ONE)
        if answers is None:
            return BatchResult(Ending.RUN_ONE_BY_ONE)
        outcomes, walls = answers
        for index, (attempt, outcome, wall) in enumerate(zip(self.attempts, outcomes, walls)):
            fields[index] = self._fields(attempt, outcome, wall)
        return BatchResult(Ending.DONE, fields)

    def _call(
        self, task_ids: list[int], digests: list[str], args: list[Any], task_envs: list[dict[str, Any]]
    ) -> tuple[list[Outcome], list[float]] | None:
        """Each call's outcome and seconds, or None when the batch must run one by one
        (ChildDied and Interrupted go to ``run``)."""

        def call(proc: WarmProcess) -> tuple[list[Outcome], list[float]]:
            # The child's own sandbox, made once: it empties it after every call, and a
            # directory made and removed per batch cost ~90 us on our disks (the workers' py-spy
            # table of ``python -m bench.profile_wq --phases batch``).
            sandbox = proc.sandbox_in(self.slot.workdir)
            message = RunBatch(task_ids, digests, args, task_envs, {}, self.slot.environment(sandbox), sandbox)
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
