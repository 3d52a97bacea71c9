"""Categories: ``stats_category`` and ``cancel_by_category``.

A task's category (``specify_category``, default ``"default"``) chooses the resources it
gets where it declares none (allocating.py).  The managers publish the categories' maximums
in the queue's ``categories`` hash so ``wq-redis status -A`` can show them; each
task carries its category in its hash (field ``cat``) so a category's tasks can be found.

As in Work Queue, ``stats_category`` is the view of one manager: its cumulative counters
(submitted, done, failed, cancelled) and the present state of the tasks it submitted.
"""

from __future__ import annotations

from ..protocol.fields import ALLOCATED, MEMBER, STATE, STATE_FINISHED_B, STATE_READY_B, STATE_RUNNING_B
from ..protocol.resources import given
from ..protocol.views import QueueView
from .books import TaskBooks
from .stats import Stats


def category_stats(books: TaskBooks, view: QueueView, category: str) -> Stats:
    """Work Queue's ``stats_category``: this manager's tasks of ``category`` (its books, and
    their states in Redis as ``view`` reads them)."""
    counts = books.categories.of(category)
    stats = Stats(
        tasks_submitted=counts["submitted"],
        tasks_done=counts["done"],
        tasks_failed=counts["failed"],
        tasks_cancelled=counts["cancelled"],
    )
    stats.tasks_with_results = len(books.results_in(category))
    hash_ids = [books.hash_id(i) for i in books.waiting_in(category)]  # a packed task's state is its pack's
    holding = set()
    for hash_id, (state, member, alloc) in zip(hash_ids, view.task_fields(hash_ids, (STATE, MEMBER, ALLOCATED))):
        if state == STATE_READY_B:
            stats.tasks_waiting += 1
        elif state == STATE_RUNNING_B:
            stats.tasks_running += 1
            stats.tasks_on_workers += 1
            held = given(member.decode(), alloc) if member and hash_id not in holding else None
            holding.add(hash_id)  # a pack holds one task's resources, whatever its size
            if held is not None:
                stats.committed_cores += held.cores
                stats.committed_memory += held.memory
                stats.committed_disk += held.disk
                stats.committed_gpus += held.gpus
        elif state == STATE_FINISHED_B:
            stats.tasks_with_results += 1
    return stats


def ids_to_cancel_in_category(books: TaskBooks, view: QueueView, category: str) -> list[int]:
    """``cancel_by_category``'s tasks: every waiting or running task of ``category`` in the
    queue (as ``view`` finds them), and this manager's finished-but-not-returned ones."""
    return books.results_in(category) + view.ids_with_category(category)
