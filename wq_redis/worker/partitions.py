"""The worker's calls on a queue kept in N partitions (protocol/partitions.py).

``PartitionedStore`` is the store of partition 0, where the worker's record, heartbeat,
wake and control keys live, and from where it reads function bodies and cached inputs;
what concerns a task goes to the task's partition (``id % N``): its completion, lease
renewal, hand-back, escalation.

Claims, fairly across partitions: a claim that does not wait asks the partitions in an
order whose first one rotates per claim, and stops at the first that gives tasks (a busy
worker's claim usually costs one round trip, as on an unsharded queue).

An idle worker waits cheaply (issue 17's goal: about one Redis call per lease/3): BLPOP
cannot span slots on a cluster, so it waits in partition 0 only, on the wake keys there
(its queues', the new-queue key, its own), with the claim of partition 0 in the same
round trip, as on an unsharded queue.  Partition 0's new-queue key is the queue's
doorbell: the manager rings it after every submit that reached another partition
(client/shards.py).  Then:

- woken, and partition 0 had nothing for it: it asks the other partitions in turn; when
  one gives it tasks it rings the doorbell again, so that the next idle worker looks too
  (each woken worker passes the news on, as claim.lua does within a partition);
- its wait ran out (nothing rang): it asks one other partition, a different one each
  time, so that a wake-up lost to a crash delays a task by at most N-1 idle waits.

A worker becomes idle only after a claim that asked every partition found nothing, so
tasks are never left in a partition while the worker that could run them sleeps.
Idle cost: two calls per idle wait (one with an unsharded queue) and the heartbeat.

A partition i > 0 that does not answer (its primary died, and the cluster has not yet
promoted its replica: protocol/partition_outage.py) is skipped for half a second at a time:
claims ask the others, the results of its tasks are held in the outbox (``Delivery.RETRY``:
sent again with the next claims, until it answers), the leases held in the others are
renewed, the reaper passes it by.  Nothing rings when it is back, so while one is away an
idle worker's wait lasts at most that long, and its claim asks the partitions away
too.  Partition 0's failures are raised, as unsharded.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from ..protocol import partition_outage
from ..protocol.answers import Claimed, Delivery, Fields, Renewal
from ..protocol.partition_outage import DownPartitions, fail_fast
from ..protocol.partitions import partition_of, split, stored_shards
from ..protocol.store import QueueStore

log = logging.getLogger("wq_redis.worker")
Result = tuple[int, str, dict[str, Any]]
Broken = Callable[[list[tuple[str, str]]], None] | None


class PartitionedStore(QueueStore):
    """Partition 0's store, with a task's calls routed to its partition (see the module doc)."""

    sharded = True

    def __init__(self, client: Any, queue: str, shards: int, durability: str = "none") -> None:
        super().__init__(client, queue, durability=durability)
        self.shards = shards
        self.parts: list[QueueStore] = [self] + [
            QueueStore(client, queue, durability=durability, part=i) for i in range(1, shards)
        ]
        fail_fast(client, self.parts[1:])
        self.down = DownPartitions(
            log, queue, "the others are served meanwhile; results of its tasks are held until it answers"
        )
        self._turn = 0  # the partition a claim that does not wait asks first
        self._spare = 1  # the partition an idle wait that ran out asks besides partition 0

    def _part(self, task_id: int) -> QueueStore:
        return self.parts[partition_of(task_id, self.shards)]

    # -- claim -------------------------------------------------------------------------------
    def claim(  # type: ignore[override]  # the same arguments, passed on by name
        self,
        worker: str,
        free: dict[str, int],
        tags: Sequence[str],
        max_tasks: int,
        lease_ms: int,
        token_prefix: str,
        results: Sequence[Result] = (),
        wake_on: Sequence[str] | None = None,
        delivered: Callable[[list[Delivery]], None] | None = None,
        on_broken: Callable[[list[tuple[str, str]]], None] | None = None,
        **options: Any,
    ) -> tuple[list[Claimed], list[str], list[Delivery]]:
        """Deliver ``results`` to their partitions and claim, as ``QueueStore.claim`` (see
        the module doc for the order partitions are asked in)."""
        by_part = split(range(len(results)), self.shards, lambda index: results[index][0])
        away = self.down.down()  # (usually none)
        if wake_on is not None:  # an idle worker's wait: in partition 0 (the doorbell's)
            first = 0
            if away:  # nothing rings when a partition is back: look again after its back-off
                backoff = partition_outage.BACKOFF_SECONDS
                options["block_seconds"] = min(options.get("block_seconds", backoff), backoff)
        else:
            first, self._turn = self._turn, (self._turn + 1) % self.shards
            if first and self.down.skipped(first):
                first = 0  # (partition 0 is never skipped: its outage is the queue's)
        accepted: dict[int, Delivery] = {}
        for part, indexes in by_part.items():  # results of the other partitions: delivered there
            if part != first:
                accepted.update(zip(indexes, self._complete_in(part, [results[i] for i in indexes], on_broken)))
        mine = by_part.get(first, [])
        common: dict[str, Any] = dict(worker=worker, free=free, tags=tags, max_tasks=max_tasks, lease_ms=lease_ms)
        common.update(token_prefix=token_prefix, on_broken=on_broken, **options)
        claimed, eligible, answers = self._claim_in(
            first, dict(results=[results[i] for i in mine], wake_on=wake_on, **common)
        )
        accepted.update(zip(mine, answers or [Delivery.RETRY] * len(mine)))
        seen = dict.fromkeys(eligible)
        if wake_on is None:
            rest = [(first + i) % self.shards for i in range(1, self.shards)]
        elif self.woken:  # rung: whatever rang may be in any partition
            spare = self._next_spare()
            rest = [(spare - 1 + i) % (self.shards - 1) + 1 for i in range(self.shards - 1)]
        else:  # the wait ran out: one other partition, in turn (see the module doc)
            rest = [self._next_spare()]
        if wake_on is not None and away:
            rest += [part for part in away if part not in rest]
        for part in rest:
            if claimed:
                break
            claimed, eligible, _ = self._claim_in(part, common)
            seen.update(dict.fromkeys(eligible))
            if claimed and wake_on is not None:
                self._ring([self.keys.new_queue_wake])  # pass the doorbell on: more may wait there
        deliveries = [accepted[i] for i in range(len(results))]
        if delivered is not None:
            delivered(deliveries)
        return claimed, list(seen), deliveries

    def _claim_in(self, part: int, arguments: dict[str, Any]) -> tuple[list[Claimed], list[str], list[Delivery]]:
        """``QueueStore.claim`` in partition ``part``; nothing (its results not answered:
        the caller holds them) when a partition i > 0 is down."""
        nothing: tuple[list[Claimed], list[str], list[Delivery]] = ([], [], [])
        return self.down.ask(part, "claim", partial(QueueStore.claim, self.parts[part], **arguments), nothing)

    def _complete_in(self, part: int, results: list[Result], on_broken: Broken) -> list[Delivery]:
        """``QueueStore.complete`` in partition ``part``; every result ``Delivery.RETRY``
        (held by the worker, sent again later) while a partition i > 0 is down."""
        return self.down.ask(
            part,
            "delivery",
            partial(QueueStore.complete, self.parts[part], results, on_broken),
            [Delivery.RETRY] * len(results),
        )

    def _next_spare(self) -> int:
        """The partition other than 0 an idle wait's claim asks next (rotating)."""
        spare = self._spare
        self._spare = spare % (self.shards - 1) + 1
        return spare

    # -- a task's calls, in its partition ------------------------------------------------------
    def complete(self, results: Sequence[Result], on_broken: Broken = None) -> list[Delivery]:
        accepted: dict[int, Delivery] = {}
        for part, indexes in split(range(len(results)), self.shards, lambda index: results[index][0]).items():
            accepted.update(zip(indexes, self._complete_in(part, [results[i] for i in indexes], on_broken)))
        return [accepted[i] for i in range(len(results))]

    def renew(
        self,
        worker: str,
        status: str,
        held: dict[int, str],
        lease_ms: int,
        on_broken: Broken = None,
        wait_seconds: float = 0.0,
        reaper_lock_ms: int = 0,
    ) -> Renewal:
        """The heartbeat in partition 0 (with its wait and the reaper's lock), then the
        leases held in other partitions, renewed there without a heartbeat (renew.lua's
        empty status): a worker holding nothing elsewhere makes one call, as unsharded.
        A partition that is down is passed by (its leases run on; the others are renewed)."""
        by_part = split(list(held.items()), self.shards)
        renewal = QueueStore.renew(
            self, worker, status, dict(by_part.pop(0, [])), lease_ms, on_broken, wait_seconds, reaper_lock_ms
        )
        lost = list(renewal.lost)
        for part, pairs in by_part.items():
            renewed: Renewal | None = self.down.ask(
                part,
                "lease renewal",
                partial(QueueStore.renew, self.parts[part], worker, "", dict(pairs), lease_ms, on_broken),
                None,
            )
            if renewed is not None:
                lost += renewed.lost
        if len(lost) == len(renewal.lost):
            return renewal
        return dataclasses.replace(renewal, lost=lost)

    def release(self, held: dict[int, str]) -> None:
        """Hand leases back; those of a partition that is down expire there instead."""
        for part, pairs in split(list(held.items()), self.shards).items():
            self.down.ask(part, "hand-back", partial(QueueStore.release, self.parts[part], dict(pairs)), None)

    def escalate(self, task_id: int, token: str) -> bool:
        return QueueStore.escalate(self._part(task_id), task_id, token)

    def task_hash(self, task_id: int) -> Fields:
        return QueueStore.task_hash(self._part(task_id), task_id)

    def leases_with_prefix(self, prefix: str) -> dict[int, str]:
        found: dict[int, str] = {}
        for part in self.parts:
            found.update(QueueStore.leases_with_prefix(part, prefix))
        return found

    def reap(self, lock_ms: int, worker_timeout_ms: int, force: bool = False) -> list[int] | None:
        """The reaper of every partition, under partition 0's lock."""
        if not force and not self.client.set(self.keys.reaper_lock, 1, nx=True, px=lock_ms):
            return None
        found: list[int] = []
        for index, part in enumerate(self.parts):
            reaped: list[int] | None = self.down.ask(
                index, "reaper", partial(QueueStore.reap, part, 0, worker_timeout_ms, force=True), None
            )
            found += reaped or []
        return found

    def close_idle_connections(self) -> None:
        for part in self.parts:
            QueueStore.close_idle_connections(part)


def worker_store(client: Any, queue: str, shards: int = 0, durability: str = "none") -> QueueStore:
    """The worker's store of ``queue``: ``shards`` partitions (0: as its manager stored the
    count in Redis, else 1); a plain store for an unsharded queue."""
    count = shards or stored_shards(client, queue) or 1
    if count == 1:
        return QueueStore(client, queue, durability=durability)
    return PartitionedStore(client, queue, count, durability)
