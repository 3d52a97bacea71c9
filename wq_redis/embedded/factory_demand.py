"""How many workers a factory wants: Work Queue's ``work_queue_factory`` rule, on one read of the queue.

Work Queue's factory asks, every cycle, for one worker per task waiting or running
(``tasks_per_worker`` tasks per worker, by default as many as a worker has cores), or more
where the tasks' declared resources need more workers of the factory's size; it keeps that
between ``min_workers`` and ``max_workers``, counts workers that came from elsewhere as
already there, and never has more than ``workers_per_cycle`` of its own still on their
way.  It never removes a worker: surplus ones leave by their idle ``timeout``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..client.stats import Stats
from ..protocol.resources import RESOURCE_NAMES, parse_class, split_member

# work_queue_factory's defaults (min-workers, max-workers, workers-per-cycle, timeout)
DEFAULT_MIN_WORKERS = 5
DEFAULT_MAX_WORKERS = 100
DEFAULT_WORKERS_PER_CYCLE = 5
DEFAULT_TIMEOUT = 300  # seconds a worker stays idle before it exits


@dataclass(frozen=True)
class Demand:
    """What the queue needs, as Work Queue's manager reports it to its factory."""

    tasks_waiting: int = 0
    tasks_on_workers: int = 0
    tasks_left: int = 0  # announced but not submitted yet (Work Queue's specify_num_tasks_left)
    workers_connected: int = 0
    # resources the waiting tasks ask for plus those the running ones hold (tasks_total_*)
    cores: int = 0
    memory: int = 0
    disk: int = 0
    gpus: int = 0


@dataclass(frozen=True)
class Sizing:
    """The factory's attributes that decide how many workers it runs (None: not set)."""

    min_workers: int = DEFAULT_MIN_WORKERS
    max_workers: int = DEFAULT_MAX_WORKERS
    workers_per_cycle: int = DEFAULT_WORKERS_PER_CYCLE
    tasks_per_worker: int | None = None  # None: as many as a worker's cores (one without cores)
    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    gpus: int | None = None


def demand_from_stats(stats: Stats, tasks_left: int = 0, tags: str | None = None) -> Demand:
    """The demand in one ``WorkQueue.stats`` snapshot (the stats script: one round trip),
    and the tasks the manager said are still coming (``specify_num_tasks_left``).

    A factory whose workers take only some ``tags`` (comma-separated) counts the waiting
    tasks of those tags alone: its workers could take no other."""
    wanted = {t.strip() for t in tags.split(",") if t.strip()} if tags else None
    asked = dict.fromkeys(RESOURCE_NAMES, 0)
    waiting = 0
    for member, count in stats.waiting_by_queue.items():
        cls, tag = split_member(member)
        if wanted is not None and tag not in wanted:
            continue
        try:
            request = parse_class(cls)
        except ValueError:  # a registry member that is not ours: nothing waits in it for us
            continue
        waiting += count
        for name in RESOURCE_NAMES:
            asked[name] += getattr(request, name) * count
    return Demand(
        tasks_waiting=stats.tasks_waiting if wanted is None else waiting,
        tasks_on_workers=stats.tasks_on_workers,
        tasks_left=tasks_left,
        workers_connected=stats.workers_connected,
        **{name: asked[name] + getattr(stats, f"committed_{name}") for name in RESOURCE_NAMES},
    )


def workers_needed(demand: Demand, sizing: Sizing) -> int:
    """Workers the queue needs, between ``min_workers`` and ``max_workers``."""
    per_worker = sizing.tasks_per_worker
    if per_worker is None or per_worker < 1:
        per_worker = sizing.cores if sizing.cores and sizing.cores > 0 else 1
    tasks = demand.tasks_waiting + demand.tasks_left + demand.tasks_on_workers
    need = max(math.ceil(tasks / per_worker), _needed_by_resources(demand, sizing))
    lowest = min(sizing.min_workers, sizing.max_workers)  # Work Queue lowers a minimum above the maximum
    return max(lowest, min(need, sizing.max_workers))


def _needed_by_resources(demand: Demand, sizing: Sizing) -> int:
    """Workers of the factory's size that the tasks' resources fill (0 for sizes not set)."""
    need = 0
    for name in RESOURCE_NAMES:
        size, total = getattr(sizing, name), getattr(demand, name)
        if size and size > 0 and total > 0:
            need = max(need, math.ceil(total / size))
    return need


def workers_to_start(needed: int, started: int, connected: int, per_cycle: int) -> int:
    """New workers for this cycle, given the factory's ``started`` workers still alive and
    the ``connected`` ones the queue sees (its own that registered, and any others)."""
    new = needed - started
    on_their_way = started - connected
    if on_their_way < 0:  # workers from elsewhere serve the queue too: they count
        new += on_their_way
        on_their_way = 0
    if per_cycle > 0 and new + on_their_way > per_cycle:
        new = per_cycle - on_their_way
    return max(0, new)
