"""The messages between the worker and its warm child: one immutable typed record
(``typing.NamedTuple``) each, told apart by type.

Worker -> child: ``RunCall`` (one call, the per-task path), ``RunBatch`` (short calls back
to back), ``LaneSpec`` (wait for work and run it: worker/lane.py), ``StopLane``.
Child -> worker: ``NeedBodies`` (functions it no longer holds), ``CallDone``,
``BatchDone``, and from a lane ``LaneClaimed``/``LaneDone`` (its ledger's records) and
``LaneEnd``.

NamedTuples rather than frozen dataclasses: a frozen dataclass compiles its methods when its
class is made, and ten of them were 4.5 ms of a warm child's start (``python -X importtime
-m wq_redis.worker.child``), a NamedTuple class about a tenth of that; they are also made
and read faster.

On the wire (``encode``, pickled by channel.py) a message is a tuple of its type's tag and
its field values: no class looked up by name in each pickle, no field names, so a message
costs what the dict it replaces did, or less.  A batch's calls and replies are columns,
one list per field, not an object per call: pickling and loading 255 small objects cost
several times what five lists of plain values do (the worker's batch/s in ``python -m
bench.run --systems wq``); the batch's statuses are enum members the pickle memoizes
(``Status``), as cheap as the bare strings they replace.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # redis-py comes with the store: a child imports it only for its lane
    from ...protocol.store import Claimed, Delivery


class Status(enum.Enum):
    """How a call ended in the child."""

    OK = "ok"  # it returned: the value is its return value
    RAISED = "raised"  # it raised: the value is the exception (its traceback is in the output)
    ERROR = "error"  # it could not be loaded, or its value cannot travel: ``error`` says why

    def __reduce_ex__(self, protocol: Any) -> str:  # type: ignore[override]  # a str is pickle's "by name"
        return f"{type(self).__qualname__}.{self.name}"  # by reference: memoized within a message


# -- worker -> child ---------------------------------------------------------------------
class RunCall(NamedTuple):
    """Call one function in the task's sandbox (the worker watches its limits)."""

    digest: str
    body: bytes | None  # the pickled function; None: the child holds it (else it answers NeedBodies)
    args: Any  # pickled (args, kwargs), bytes or, when large, a buffer sent beside the pickle
    env: dict[str, str | None]
    cwd: str


class RunBatch(NamedTuple):
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


class LaneSpec(NamedTuple):
    """Start a fast lane (worker/lane.py): what the child needs to claim and deliver as
    the worker would."""

    redis: dict[str, Any]  # connection.settings_of the worker's client
    queue: str
    claim: dict[str, Any]  # keyword arguments of QueueStore.claim, wake_on included
    max_result_bytes: int
    sandbox: str
    seconds_per_call: float | None  # the worker's pace: the lane keeps it (followers per claim)
    durability: str = "none"  # the worker's: the lane's deliveries wait as its own do


class StopLane(NamedTuple):
    """End the lane after the task it runs (ignored by a child whose lane ended already)."""


# -- child -> worker ---------------------------------------------------------------------
class NeedBodies(NamedTuple):
    """The child no longer holds these functions (it keeps a bounded cache) and they were
    not sent: the worker sends the message again with them."""

    digests: tuple[str, ...]


class CallDone(NamedTuple):
    """The answer to a RunCall."""

    status: Status
    value: Any  # the pickled return value or exception (bytes or a buffer); None for ERROR
    error: str
    stdout: bytes  # fds 1 and 2 while it ran
    cpu_time: float
    max_rss_mb: int


class BatchDone(NamedTuple):
    """The answer to a RunBatch: call i's ending is the i-th entry of each column."""

    statuses: list[Status]
    values: list[Any]
    errors: list[str]
    stdouts: list[bytes]
    cpu_times: list[float]
    walls: list[float]  # seconds each call ran
    max_rss_mb: int  # the child's peak, after the batch


class LaneClaimed(NamedTuple):
    """A lane's ledger record: it claimed a task and is about to run it."""

    task_id: int
    token: str
    member: str
    submitted: bytes | None  # the task's "sub" and "ts" fields, for the worker's metrics
    started: bytes | None


class LaneDone(NamedTuple):
    """A lane's ledger record: Redis answered for the task's result."""

    token: str
    accepted: Delivery
    summary: dict[str, Any]  # the result's code and measurements (RESULT, MEASURED)
    wall: float


class LaneEnd(NamedTuple):
    """How a lane ended (the child's last message of it): what it claimed for the main
    process to run, the queues it may block on next, and what went wrong, if anything."""

    claimed: list[Claimed]
    broken: list[tuple[str, str]]  # keys its claims could not read (wrong type)
    eligible: list[str] | None = None  # None: as before the lane
    error: str = ""  # the claim failed (Redis away): the main process waits a little
    failed: str = ""  # a bug of the lane's: its traceback
    undelivered: dict[str, Any] | None = None  # result fields of its last task Redis did not take


Message = (
    RunCall | RunBatch | LaneSpec | StopLane | NeedBodies | CallDone | BatchDone | LaneClaimed | LaneDone | LaneEnd
)
_TYPES: tuple[type[Any], ...] = (
    RunCall,
    RunBatch,
    LaneSpec,
    StopLane,
    NeedBodies,
    CallDone,
    BatchDone,
    LaneClaimed,
    LaneDone,
    LaneEnd,
)
_TAGS = {cls: tag for tag, cls in enumerate(_TYPES)}
_CALL_DONE = _TAGS[CallDone]
_STATUS_OF = {status.value: status for status in Status}


def encode(message: Message) -> tuple[Any, ...]:
    """The message as plain data: its type's tag, then its field values.  A CallDone's
    status goes as its value: a lone enum member costs a class looked up by name in the
    pickle (2 us a call on the per-task path; a batch's statuses share one, see Status)."""
    if type(message) is CallDone:
        return (_CALL_DONE, message.status.value, *message[1:])
    return (_TAGS[type(message)], *message)


def decode(data: tuple[Any, ...]) -> Message:
    """The message ``encode`` gave ``data`` for."""
    if data[0] == _CALL_DONE:
        return CallDone(_STATUS_OF[data[1]], *data[2:])
    message: Message = _TYPES[data[0]]._make(data[1:])
    return message
