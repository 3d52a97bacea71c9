"""``Manager.stats`` with TaskVine's field names (``struct vine_stats``), from the engine's
Work Queue statistics of the same snapshot.

Every field TaskVine has is present, so a program reading any of them runs; the ones the
engine does not measure (manager times, bandwidth, worker churn other than losses,
per-worker extremes) read 0.  The porting notes list them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..client.stats import Stats

# TaskVine's fields the engine does not measure: always 0 here
NOT_MEASURED = (
    "workers_init", "workers_able", "workers_joined", "workers_removed", "workers_released", "workers_idled_out",
    "workers_slow", "workers_blocked", "tasks_recovery", "tasks_exhausted_attempts", "time_when_started", "time_send",
    "time_receive", "time_send_good", "time_receive_good", "time_status_msgs", "time_internal", "time_polling",
    "time_application", "time_scheduling", "time_workers_execute", "time_workers_execute_good",
    "time_workers_execute_exhaustion", "bytes_sent", "bytes_received", "bandwidth", "capacity_memory",
    "capacity_disk", "capacity_gpus", "capacity_instantaneous", "capacity_weighted", "max_cores", "max_memory",
    "max_disk", "max_gpus", "min_cores", "min_memory", "min_disk", "min_gpus", "inuse_cache",
)  # fmt: skip


@dataclass
class VineStats:
    """TaskVine's ``vine_stats``: current state of workers and tasks, and cumulative counters."""

    workers_connected: int = 0
    workers_init: int = 0
    workers_idle: int = 0
    workers_busy: int = 0
    workers_able: int = 0
    workers_joined: int = 0
    workers_removed: int = 0
    workers_released: int = 0
    workers_idled_out: int = 0
    workers_slow: int = 0
    workers_blocked: int = 0
    workers_lost: int = 0
    tasks_waiting: int = 0
    tasks_on_workers: int = 0
    tasks_running: int = 0
    tasks_with_results: int = 0
    tasks_recovery: int = 0
    tasks_submitted: int = 0
    tasks_dispatched: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_successful: int = 0
    tasks_cancelled: int = 0
    tasks_exhausted_attempts: int = 0
    time_when_started: int = 0
    time_send: int = 0
    time_receive: int = 0
    time_send_good: int = 0
    time_receive_good: int = 0
    time_status_msgs: int = 0
    time_internal: int = 0
    time_polling: int = 0
    time_application: int = 0
    time_scheduling: int = 0
    time_workers_execute: int = 0
    time_workers_execute_good: int = 0
    time_workers_execute_exhaustion: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    bandwidth: float = 0.0
    capacity_tasks: int = 0
    capacity_cores: int = 0
    capacity_memory: int = 0
    capacity_disk: int = 0
    capacity_gpus: int = 0
    capacity_instantaneous: int = 0
    capacity_weighted: int = 0
    total_cores: int = 0
    total_memory: int = 0
    total_disk: int = 0
    total_gpus: int = 0
    committed_cores: int = 0
    committed_memory: int = 0
    committed_disk: int = 0
    committed_gpus: int = 0
    max_cores: int = 0
    max_memory: int = 0
    max_disk: int = 0
    max_gpus: int = 0
    min_cores: int = 0
    min_memory: int = 0
    min_disk: int = 0
    min_gpus: int = 0
    inuse_cache: int = 0


# the fields both have, under the same name and meaning
_SHARED = tuple(
    f.name for f in dataclasses.fields(VineStats) if f.name in Stats.__dataclass_fields__ and f.name not in NOT_MEASURED
)


def vine_stats(stats: Stats) -> VineStats:
    """TaskVine's statistics of one engine snapshot."""
    out = VineStats(**{name: getattr(stats, name) for name in _SHARED})
    # TaskVine counts a task done when it completes and failed when its result is not
    # SUCCESS (tasks_done includes both); the engine's counters mean the same
    out.tasks_successful = max(0, stats.tasks_done - stats.tasks_failed)
    return out


def _up(a: int, b: int) -> int:
    return -(-a // b)


def hungry_count(stats: Stats, waiting_requests: list[tuple[int, int, int, int]], minimum: int, factor: int) -> int:
    """TaskVine's ``hungry()``: how many more tasks the workers could take (0 when sated).

    Its rule: at least ``minimum`` (or ``factor`` per connected worker); else as many as
    fit in ``factor`` times the workers' resources less what running tasks hold, sized by
    the waiting tasks' requests (``waiting_requests``: cores, memory, disk, gpus of each
    waiting resource class; a resource not requested counts as the running tasks' mean),
    less the tasks already waiting.
    """
    wanted = max(minimum, stats.workers_connected * factor)
    if stats.tasks_running < 1 and stats.tasks_waiting < 1:
        return wanted
    running = max(stats.tasks_running, 1)
    held = (stats.committed_cores, stats.committed_memory, stats.committed_disk, stats.committed_gpus)
    total = (stats.total_cores, stats.total_memory, stats.total_disk, stats.total_gpus)
    mean_held = [_up(h, running) for h in held]
    mean_held[0] = max(1, mean_held[0])  # every task takes a core, or hunger has no bound
    free = [factor * t - h for t, h in zip(total, held)]
    if stats.tasks_waiting < 1:
        size = mean_held
    else:
        size = [
            _up(sum(req[i] if req[i] > 0 else mean_held[i] for req in waiting_requests), len(waiting_requests))
            for i in range(4)
        ] if waiting_requests else mean_held  # fmt: skip
    needed = min(_up(f, s) for f, s in zip(free, size) if s > 0)
    if stats.tasks_waiting < 1:
        return max(needed, wanted)
    return max(0, max(needed, wanted) - stats.tasks_waiting)
