"""Categories: ``stats_category`` and ``cancel_by_category``.

A task's category (``specify_category``, default ``"default"``) chooses the resources it
gets when it declares none (``specify_category_max_resources``).  The managers publish
those in the queue's ``categories`` hash so ``wq-redis status -A`` can show them; each
task carries its category in its hash (field ``cat``) so a category's tasks can be found.

As in Work Queue, ``stats_category`` is the view of one manager: its cumulative counters
(submitted, done, failed, cancelled) and the present state of the tasks it submitted.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from ..protocol.codes import Result
from ..protocol.resources import parse_class, split_member
from .stats import Stats
from .task import Task

if TYPE_CHECKING:
    from .queue import WorkQueue


class CategoryBook:
    """Cumulative per-category counters of one manager."""

    def __init__(self) -> None:
        self.counts: collections.defaultdict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def submitted(self, tasks: list[Task]) -> None:
        for task in tasks:
            self.counts[task.category]["submitted"] += 1

    def finished(self, task: Task) -> None:
        counts = self.counts[task.category]
        counts["done"] += 1
        if task.result != Result.SUCCESS:
            counts["failed"] += 1

    def cancelled(self, task: Task) -> None:
        self.counts[task.category]["cancelled"] += 1


def category_stats(queue: WorkQueue, category: str) -> Stats:
    """Work Queue's ``stats_category``: this manager's tasks of ``category``."""
    from ..protocol.views import QueueView

    counts = queue._category_book.counts.get(category, collections.Counter())
    stats = Stats(
        tasks_submitted=counts["submitted"],
        tasks_done=counts["done"],
        tasks_failed=counts["failed"],
        tasks_cancelled=counts["cancelled"],
    )
    stats.tasks_with_results = sum(1 for t in queue._results.values() if t.category == category)
    ids = [i for i, t in list(queue._submitted.items()) if t.category == category]
    view = QueueView(queue._client, queue.name)
    hash_ids = [queue._hash_id(i) for i in ids]  # a packed task's state is its pack's
    holding = set()
    for hash_id, (state, member) in zip(hash_ids, view.task_fields(hash_ids, ("s", "q"))):
        if state == b"1":
            stats.tasks_waiting += 1
        elif state == b"2":
            stats.tasks_running += 1
            stats.tasks_on_workers += 1
            held = parse_class(split_member(member.decode())[0]) if member and hash_id not in holding else None
            holding.add(hash_id)  # a pack holds one task's resources, whatever its size
            if held is not None:
                stats.committed_cores += held.cores
                stats.committed_memory += held.memory
                stats.committed_disk += held.disk
                stats.committed_gpus += held.gpus
        elif state == b"3":
            stats.tasks_with_results += 1
    return stats


def cancel_category(queue: WorkQueue, category: str) -> list[Task]:
    """Cancel every waiting or running task of ``category`` in the queue, and this
    manager's finished-but-not-returned ones; returns them."""
    from ..protocol.views import QueueView

    local = [i for i, t in queue._results.items() if t.category == category]
    return queue._cancel(local + QueueView(queue._client, queue.name).ids_with_category(category))
