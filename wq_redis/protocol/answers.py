"""What the store's calls answer: the types the manager and the worker get back from Redis
(a claimed task, a delivery's fate, a submit's outcome, a queue's snapshot), the errors a
task's values can raise when loaded, and the decoders of the scripts' raw answers."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .codes import Result
from .fields import PACK_COUNT_PREFIX_B
from .resources import Request

Fields = dict[bytes, bytes]
Call = tuple[str, list[str], list[Any]]  # (script name, or "set"/"blpop"; keys; arguments): one command of a pipeline


class TaskRefused(ValueError):
    """A value a task needs cannot be loaded: the task fails with this message and
    ``result`` (a ``Result`` code), the worker goes on."""

    result = Result.UNKNOWN


class TaskTooLarge(TaskRefused):
    """A value a task needs is larger than the worker's ``--max-task-bytes``."""

    result = Result.RESOURCE_EXHAUSTION


class KeyUnreadable(TaskRefused):
    """A key a task needs (its function body, a cached input) holds a type it never has:
    another client's garbage."""


@dataclass(frozen=True, slots=True)
class Renewal:
    """A heartbeat's answer (renew.lua): the ids whose lease the worker lost, whether its
    record is intact, and what the manager asks of it (worker_control.py)."""

    lost: list[int]
    registered: bool
    shutdown: bool = False  # asked to exit: drain, then exit
    blocked: bool = False  # its host is blocked: claim nothing
    rung: bool = False  # its wait before the renewal was ended by its control key, not by time
    reaper: bool = False  # it took the reaper's lock: it runs the reaper now (QueueStore.reap, force)
    shards: int | None = None  # the partitions its manager stored for the queue (None: none stored, or garbage)


def too_large_message(what: str, size: int, limit: int) -> str:
    return f"{what} is {size} bytes, over the {limit} bytes this worker loads (wq-redis worker --max-task-bytes)"


def flat_to_dict(flat: Sequence[bytes]) -> Fields:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def broken_keys(rows: Sequence[Sequence[bytes]]) -> list[tuple[str, str]]:
    return [(key.decode(errors="replace"), error.decode(errors="replace")) for key, error in rows]


def tasks_by_worker(running: Sequence[Sequence[Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker, _, tasks, *_ in running:
        counts[worker.decode()] = counts.get(worker.decode(), 0) + int(tasks)
    return counts


def counters_of(flat: Sequence[bytes]) -> dict[str, int]:
    """The stats hash's counters, without the pack_* bookkeeping the scripts fold in."""
    return {
        name.decode(errors="replace"): int(v)
        for name, v in flat_to_dict(flat).items()
        if not name.startswith(PACK_COUNT_PREFIX_B) and v.lstrip(b"-").isdigit()
    }  # another client's junk: skipped


class QueueStateLost(Exception):
    """submit.lua queued nothing: the queue's incarnation is not the one the manager
    attached to (``seen``: the one found, None when missing), so Redis lost the queue's
    state, and with it the functions and files the manager stored.  The manager attaches
    again and resubmits what it holds (recovery.py)."""

    def __init__(self, seen: str | None) -> None:
        super().__init__(
            f"Redis lost the queue's state (its incarnation is {'missing' if seen is None else repr(seen)}): "
            "nothing was queued; the manager attaches again and resubmits the tasks it holds"
        )
        self.seen = seen


@dataclass
class Submitted:
    """What submit.lua did with a batch of rows."""

    queued: int = 0  # tasks queued (a re-sent task already in Redis is not queued again)
    replaced: list[int] = field(default_factory=list)  # ids whose hash held a stranger's data, replaced
    lost: QueueStateLost | None = None  # set when (part of) the batch was refused: nothing of that part queued

    @classmethod
    def of(cls, calls: Sequence[Call], answers: Sequence[Any]) -> Submitted:
        """The submit.lua answers among a pipeline's, folded into one (the other calls skipped)."""
        done = cls()
        for call, answer in zip(calls, answers):
            if call[0] == "submit":
                done.add(answer)
        return done

    def add(self, answer: Sequence[Any]) -> None:
        """Fold in one submit.lua answer."""
        if int(answer[0]) == 1:
            self.queued += int(answer[1])
            self.replaced += [int(i) for i in answer[2]]
        elif self.lost is None:
            seen = answer[1]
            self.lost = QueueStateLost(seen.decode(errors="replace") if seen else None)


class Delivery(enum.Enum):
    """What became of a result a worker delivered (complete.lua's answer); true only when
    it was recorded.  The other three say why it was dropped, for a log that tells the truth."""

    RECORDED = 1
    LEASE_LOST = 0  # another attempt holds the task now
    TASK_GONE = -1  # the task is no longer in Redis: cancelled, or finished elsewhere and retrieved
    QUEUE_LOST = -2  # nor is the queue's incarnation: Redis lost the queue's state
    RETRY = 2  # not recorded now: a key it writes holds the wrong type (nothing written; send again)

    def __bool__(self) -> bool:
        return self is Delivery.RECORDED

    @property
    def reason(self) -> str:
        """Why a result was dropped, as a worker logs it."""
        return {
            Delivery.RECORDED: "it was recorded",
            Delivery.LEASE_LOST: "its lease was lost (the task was given to another attempt)",
            Delivery.TASK_GONE: "the task no longer exists in Redis (cancelled, or another attempt "
            "finished it and the manager retrieved it)",
            Delivery.QUEUE_LOST: "the task no longer exists in Redis, nor does its queue's state "
            "(Redis lost its data; the manager resubmits the tasks it holds)",
            Delivery.RETRY: "a key it writes holds the wrong type (held, and sent again)",
        }[self]


@dataclass
class Claimed:
    """One task a worker now holds a lease on."""

    task_id: int
    token: str
    member: str
    fields: Fields
    follows: bool = False  # runs after the task claimed before it, on that task's resources
    refused: str = (
        ""  # why the worker must fail it unloaded (over --max-task-bytes, unreadable); fields are then its small ones
    )
    refused_code: int = 0  # the result code of that failure (codes.Result)


@dataclass
class Snapshot:
    """Raw state of a queue for stats: waiting per ``CLASS|TAG``, counters, live workers."""

    waiting: dict[str, int]
    running: int
    with_results: int
    counters: dict[str, int]
    workers: dict[str, Fields]
    running_tasks: list[tuple[str, str]]  # (worker, member "CLASS|TAG") per running task (or pack)
    running_given: list[Request] = field(default_factory=list)  # what each of those was given (its claim's box)
    running_by_worker: dict[str, int] = field(default_factory=dict)  # worker -> tasks (a pack's members each)
    broken: list[tuple[str, str]] = field(default_factory=list)  # (key, error) it could not read, skipped


@dataclass
class ExportSnapshot:
    """What ``wq-redis exporter`` reads of one queue at scrape time (export.lua)."""

    now_us: int  # Redis time
    waiting: dict[str, tuple[int, int]]  # "CLASS|TAG" -> (tasks, oldest submit time us or -1)
    running: dict[str, int]  # "CLASS|TAG" -> running tasks
    counters: dict[str, int]
    workers: dict[str, tuple[int, int, Fields]]  # name -> (last heartbeat ms, leases held, record fields)
    finished: int  # tasks waiting for retrieval
    result_bytes: int  # of the sampled finished tasks
    sampled: int
    broken: list[tuple[str, str]] = field(default_factory=list)  # (key, error) it could not read, skipped
