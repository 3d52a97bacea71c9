"""The manager's books: which tasks it waits for, which came back, which were packed.

A manager counts its outstanding tasks itself, never from Redis' counters (anyone may
write those): the tasks it submitted (Task objects), and after a restart those it adopted
from Redis (ids only, see recovery.py).  A finished task moves to ``results`` until
``wait`` (or a helper) takes it; then its id is kept in ``returned``, so that a duplicate
answer from Redis (a lost reply, a failover) is recognised as handed out already.

Packs (client/packs.py): several short tasks submitted in one hash, whose id is the pack's.
``pack_of`` maps a member to its pack, ``packs`` a pack to its members, until it comes back.

The queue's parts (submitting, retrieving, cancelling, recovery) and the category helpers
read and write these through the methods below, or the plain containers where a loop over
many tasks must stay as fast as it was (submit_many, retrieve).
"""

from __future__ import annotations

import collections
from collections.abc import Container

from ..protocol.codes import Result
from .task import Task


class CategoryBook:
    """Cumulative per-category counters of one manager (Work Queue's ``stats_category``)."""

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

    def of(self, category: str) -> collections.Counter[str]:
        """The counters of ``category`` (all zero for one never seen)."""
        return self.counts.get(category, collections.Counter())


class TaskBooks:
    """One manager's record of its tasks, from submit to ``wait`` (see the module doc)."""

    def __init__(self) -> None:
        self.submitted: dict[int, Task] = {}  # sent (or buffered), not yet back
        self.adopted: set[int] = set()  # outstanding tasks of an earlier manager (recovery.py)
        self.results: collections.OrderedDict[int, Task] = collections.OrderedDict()  # back, not yet handed out
        self.returned: set[int] = set()  # handed out by wait (or a helper)
        self.cancelled: set[int] = set()
        self.pack_of: dict[int, int] = {}  # task id -> the pack it was submitted in (protocol/packing.py)
        self.packs: dict[int, list[int]] = {}  # pack id -> its tasks, until the pack comes back
        self.id_ceiling = 0  # the highest task id this manager reserved or adopted
        self.unsent_failures = 0  # tasks failed here at submit, never sent: no Redis counter has them
        self.categories = CategoryBook()

    # -- counting ------------------------------------------------------------------------
    def outstanding(self) -> int:
        """Tasks not yet taken from Redis nor cancelled: submitted, or adopted."""
        return len(self.submitted) + len(self.adopted)

    def waits_for(self, task_id: int) -> bool:
        """Whether ``task_id`` is one this manager still waits for (submitted or adopted)."""
        return task_id in self.submitted or task_id in self.adopted

    def has_come_back(self, task_id: int) -> bool:
        """Whether ``task_id`` came back already (held for ``wait``, or handed out)."""
        return task_id in self.results or task_id in self.returned

    def owns(self, hash_id: int, task_id: int) -> bool:
        """Whether a finished row (task ``task_id`` in hash ``hash_id``: its own, or its
        pack's) is one of this manager's: a task it waits for, in the hash it put it in; or
        one it has taken already (a duplicate, acknowledged again)."""
        if self.waits_for(task_id):
            return self.pack_of.get(task_id, task_id) == hash_id
        return self.has_come_back(task_id)

    # -- where a task is in Redis ------------------------------------------------------------
    def hash_id(self, task_id: int) -> int:
        """The id of the hash that holds ``task_id`` in Redis: its pack's, if packed."""
        return self.pack_of.get(task_id, task_id)

    def cancel_request(self, task_id: int) -> tuple[int, int | None]:
        """What cancel.lua is asked for ``task_id``: (its hash, None), or (its pack, itself)."""
        pack_id = self.pack_of.get(task_id)
        return (task_id, None) if pack_id is None else (pack_id, task_id)

    def record_packs(self, packs: dict[int, list[int]]) -> None:
        """Packs just submitted (pack id -> member ids)."""
        self.packs.update(packs)
        for pack_id, members in packs.items():
            self.pack_of.update(dict.fromkeys(members, pack_id))

    def unpack(self, task_id: int) -> None:
        """``task_id`` is to be submitted alone again (recovery): forget its pack."""
        pack_id = self.pack_of.pop(task_id, None)
        if pack_id is not None:
            self.packs.pop(pack_id, None)

    # -- adoption (recovery.py) ---------------------------------------------------------------
    def adopt(self, hash_id: int, members: list[int]) -> None:
        """Wait for the tasks of hash ``hash_id`` that an earlier manager submitted:
        ``members`` is ``[hash_id]`` for a task alone, the pack's members for a pack."""
        if members != [hash_id]:
            self.record_packs({hash_id: members})
        self.adopted.update(members)
        self.id_ceiling = max(self.id_ceiling, hash_id, *members)

    def reserved(self, highest_id: int) -> None:
        """Ids up to ``highest_id`` were reserved for this manager."""
        self.id_ceiling = max(self.id_ceiling, highest_id)

    # -- coming back ----------------------------------------------------------------------------
    def came_back(self, task_id: int, task: Task) -> None:
        """``task`` is finished (by a worker, or failed here): held for ``wait``."""
        self.results[task_id] = task
        self.categories.finished(task)

    def failed_unsent(self, task_id: int, task: Task) -> None:
        """``task`` failed here before it was sent (an input missing, see submitting.py):
        held for ``wait`` at once, and counted for ``stats`` (``unsent_failures``)."""
        self.unsent_failures += 1
        self.came_back(task_id, task)

    def take_result(self, task_id: int) -> Task | None:
        """Hand out the finished task ``task_id`` (None if it is not held)."""
        task = self.results.pop(task_id, None)
        if task is not None:
            self.returned.add(task_id)
        return task

    def finished_among(self, wanted: Container[int]) -> list[int]:
        """The held finished tasks whose ids are in ``wanted`` (a set or a dict keyed by
        id), in the order they came back."""
        return [i for i in self.results if i in wanted]

    # -- by category -----------------------------------------------------------------------------
    def results_in(self, category: str) -> list[int]:
        """Held finished tasks of ``category``."""
        return [i for i, t in self.results.items() if t.category == category]

    def waiting_in(self, category: str) -> list[int]:
        """Submitted tasks of ``category`` that have not come back."""
        return [i for i, t in list(self.submitted.items()) if t.category == category]
