"""The messages between the worker and its warm child: one frozen dataclass each, told
apart by type.

Worker -> child: ``RunCall`` (one call, the per-task path), ``RunBatch`` (short calls back
to back), ``LaneSpec`` (wait for work and run it: worker/lane.py), ``StopLane``.
Child -> worker: ``NeedBodies`` (functions it no longer holds), ``CallDone``,
``BatchDone``, and from a lane ``LaneClaimed``/``LaneDone`` (its ledger's records) and
``LaneEnd``.

On the wire (channel.py pickles them) a message is its class and its field values, no
field names (``_compact``), and an enum member is a reference the pickle memoizes, as
cheap as the bare string it replaces.  A batch's calls and replies are columns, one list
per field, not an object per call: pickling and loading 255 small objects cost several
times five lists of plain values (pickle.dumps/loads of a 255-call batch; the worker's
batch/s in ``python -m bench.run --systems wq`` shows it).
"""

from __future__ import annotations

import enum
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # redis-py comes with the store: a child imports it only for its lane
    from ...protocol.store import Claimed, Delivery

M = TypeVar("M")


def _compact(cls: type[M]) -> type[M]:
    """Pickle ``cls`` as its class and field values (a dataclass with slots would pickle a
    state dict, restored by a Python ``__setstate__``)."""
    names = tuple(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    values = operator.attrgetter(*names) if len(names) > 1 else None

    def __reduce__(self: M) -> tuple[Any, ...]:
        if values is None:
            return (cls, tuple(getattr(self, name) for name in names))
        return (cls, values(self))

    cls.__reduce__ = __reduce__  # type: ignore[assignment,method-assign]
    return cls


class Status(enum.Enum):
    """How a call ended in the child."""

    OK = "ok"  # it returned: the value is its return value
    RAISED = "raised"  # it raised: the value is the exception (its traceback is in the output)
    ERROR = "error"  # it could not be loaded, or its value cannot travel: ``error`` says why

    def __reduce_ex__(self, protocol: Any) -> str:
        return f"{type(self).__qualname__}.{self.name}"  # by reference: memoized within a message


# -- worker -> child ---------------------------------------------------------------------
@_compact
@dataclass(frozen=True, slots=True)
class RunCall:
    """Call one function in the task's sandbox (the worker watches its limits)."""

    digest: str
    body: bytes | None  # the pickled function; None: the child holds it (else it answers NeedBodies)
    args: Any  # pickled (args, kwargs), bytes or, when large, a buffer sent beside the pickle
    env: dict[str, str | None]
    cwd: str


@_compact
@dataclass(frozen=True, slots=True)
class RunBatch:
    """Run short calls back to back in the child's own sandbox; call i is the i-th entry
    of each column (task id, function digest, arguments, the task's own variables)."""

    task_ids: list[int]
    digests: list[str]
    args: list[Any]
    task_envs: list[dict[str, str | None]]
    bodies: dict[str, bytes]  # functions the child was not sent before, by digest
    env: dict[str, str | None]  # the slot's variables, the same for every call
    cwd: str

    def only(self, keep: list[int], bodies: dict[str, bytes]) -> RunBatch:
        """The calls at the indexes ``keep``, sent with ``bodies``."""
        return RunBatch(
            [self.task_ids[i] for i in keep],
            [self.digests[i] for i in keep],
            [self.args[i] for i in keep],
            [self.task_envs[i] for i in keep],
            bodies,
            self.env,
            self.cwd,
        )


@_compact
@dataclass(frozen=True, slots=True)
class LaneSpec:
    """Start a fast lane (worker/lane.py): what the child needs to claim and deliver as
    the worker would."""

    redis: dict[str, Any]  # connection.settings_of the worker's client
    queue: str
    claim: dict[str, Any]  # keyword arguments of QueueStore.claim, wake_on included
    max_result_bytes: int
    sandbox: str
    seconds_per_task: float | None  # the worker's pace: the lane keeps it (followers per claim)


@_compact
@dataclass(frozen=True, slots=True)
class StopLane:
    """End the lane after the task it runs (ignored by a child whose lane ended already)."""


# -- child -> worker ---------------------------------------------------------------------
@_compact
@dataclass(frozen=True, slots=True)
class NeedBodies:
    """The child no longer holds these functions (it keeps a bounded cache) and they were
    not sent: the worker sends the message again with them."""

    digests: tuple[str, ...]


@_compact
@dataclass(frozen=True, slots=True)
class CallDone:
    """The answer to a RunCall."""

    status: Status
    value: Any  # the pickled return value or exception (bytes or a buffer); None for ERROR
    error: str
    stdout: bytes  # fds 1 and 2 while it ran
    cpu_time: float
    max_rss_mb: int


@_compact
@dataclass(frozen=True, slots=True)
class BatchDone:
    """The answer to a RunBatch: call i's ending is the i-th entry of each column."""

    statuses: list[Status]
    values: list[Any]
    errors: list[str]
    stdouts: list[bytes]
    cpu_times: list[float]
    walls: list[float]  # seconds each call ran
    max_rss_mb: int  # the child's peak, after the batch


@_compact
@dataclass(frozen=True, slots=True)
class LaneClaimed:
    """A lane's ledger record: it claimed a task and is about to run it."""

    task_id: int
    token: str
    member: str
    submitted: bytes | None  # the task's "sub" and "ts" fields, for the worker's metrics
    started: bytes | None


@_compact
@dataclass(frozen=True, slots=True)
class LaneDone:
    """A lane's ledger record: Redis answered for the task's result."""

    token: str
    accepted: Delivery
    summary: dict[str, Any]  # the result's code and measurements ("r", "meas")
    wall: float


@dataclass(frozen=True)
class LaneEnd:
    """How a lane ended (the child's last message of it): what it claimed for the main
    process to run, the queues it may block on next, and what went wrong, if anything."""

    claimed: list[Claimed] = field(default_factory=list)
    eligible: list[str] | None = None  # None: as before the lane
    error: str = ""  # the claim failed (Redis away): the main process waits a little
    failed: str = ""  # a bug of the lane's: its traceback
    broken: list[tuple[str, str]] = field(default_factory=list)  # keys its claims could not read (wrong type)
    undelivered: dict[str, Any] | None = None  # result fields of its last task Redis did not take


ToChild = RunCall | RunBatch | LaneSpec | StopLane
FromLane = LaneClaimed | LaneDone | LaneEnd
