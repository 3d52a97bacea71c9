"""``WorkQueue.stats``: Work Queue's statistics fields, computed from one Redis snapshot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..protocol.fields import (
    CANCELED_COUNT,
    DISPATCHED_COUNT,
    FAILED_COUNT,
    LATE_RESULTS_COUNT,
    REQUEUED_COUNT,
    RETRIEVED_COUNT,
    SUBMITTED_COUNT,
    WORKERS_LOST_COUNT,
)
from ..protocol.resources import parse_class, split_member
from ..protocol.store import Snapshot


@dataclass
class Stats:
    """Work Queue's ``work_queue_stats`` fields (counters are cumulative for the queue)."""

    workers_connected: int = 0
    workers_idle: int = 0
    workers_busy: int = 0
    workers_lost: int = 0
    tasks_waiting: int = 0
    tasks_on_workers: int = 0
    tasks_running: int = 0
    tasks_with_results: int = 0
    tasks_submitted: int = 0
    tasks_dispatched: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_cancelled: int = 0
    tasks_requeued: int = 0
    tasks_late_results: int = 0
    total_cores: int = 0
    total_memory: int = 0
    total_disk: int = 0
    total_gpus: int = 0
    committed_cores: int = 0
    committed_memory: int = 0
    committed_disk: int = 0
    committed_gpus: int = 0
    capacity_tasks: int = 0
    capacity_cores: int = 0
    waiting_by_queue: dict[str, int] = field(default_factory=dict)  # "CLASS|TAG" -> tasks

    def count_unsent_failures(self, count: int) -> Stats:
        """Add the tasks a manager failed at submit without sending them (their inputs were
        missing): submitted, done and failed, as Work Queue counts them; Redis' counters,
        which the rest comes from, never saw them."""
        self.tasks_submitted += count
        self.tasks_done += count
        self.tasks_failed += count
        return self

    @property
    def tasks_outstanding(self) -> int:
        """Submitted and neither retrieved nor cancelled yet."""
        return self.tasks_submitted - self.tasks_done - self.tasks_cancelled


def stats_from_snapshot(snap: Snapshot) -> Stats:
    c = snap.counters
    s = Stats(
        tasks_waiting=sum(snap.waiting.values()),
        tasks_running=snap.running,
        tasks_on_workers=snap.running,
        tasks_with_results=snap.with_results,
        tasks_submitted=c.get(SUBMITTED_COUNT, 0),
        tasks_dispatched=c.get(DISPATCHED_COUNT, 0),
        tasks_done=c.get(RETRIEVED_COUNT, 0),
        tasks_failed=c.get(FAILED_COUNT, 0),
        tasks_cancelled=c.get(CANCELED_COUNT, 0),
        tasks_requeued=c.get(REQUEUED_COUNT, 0),
        tasks_late_results=c.get(LATE_RESULTS_COUNT, 0),
        workers_lost=c.get(WORKERS_LOST_COUNT, 0),
        waiting_by_queue={m: n for m, n in snap.waiting.items() if n},
    )
    busy = {worker for worker, _ in snap.running_tasks}
    for name, record in snap.workers.items():
        total = json.loads(record.get(b"resources", b"{}"))
        s.workers_connected += 1
        if name in busy:
            s.workers_busy += 1
        else:
            s.workers_idle += 1
        for resource in ("cores", "memory", "disk", "gpus"):
            setattr(s, f"total_{resource}", getattr(s, f"total_{resource}") + int(total.get(resource, 0)))
    for held in snap.running_given:  # what each running task was given (its claim's box)
        s.committed_cores += held.cores
        s.committed_memory += held.memory
        s.committed_disk += held.disk
        s.committed_gpus += held.gpus
    s.capacity_cores = s.total_cores
    s.capacity_tasks = s.total_cores  # every task takes at least one core
    return s


def waiting_cores(snap_waiting: dict[str, int]) -> int:
    """Cores the waiting tasks would take (used to decide whether the queue is hungry)."""
    return sum(parse_class(split_member(m)[0]).cores * n for m, n in snap_waiting.items())
