"""Finished results on their way to Redis.

A result waits here from the moment its attempt ends until Redis has recorded it.  The
claim loop sends what waits with its next claim (one round trip for both, see
``Worker._deliver_and_claim``) or on its own (``deliver``).  What Redis cannot record now
is held for the next try, never dropped: Redis is away (an outage), or a key the result
is written to holds the wrong type (complete.lua answers ``Delivery.RETRY``).  Held
results keep their leases: the heartbeat renews them (``leases``).

The outbox shares the worker's lock, which also guards the running attempts: an attempt
leaves the running ones and enters the outbox in one critical section, and the heartbeat
reads both at once, so no lease is missed in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from ..protocol.store import Delivery, QueueStore
from .outage import RedisOutage

log = logging.getLogger("wq_redis.worker")

Finished = tuple[int, str, dict[str, Any]]  # (task id, lease token, result fields)
DELIVERY_RETRY_SECONDS = 0.5  # wait after a failed delivery: the loop would otherwise spin while Redis is away


class Outbox:
    """The results that wait for delivery, in the order their attempts ended."""

    def __init__(
        self,
        store: QueueStore,
        lock: threading.Lock,
        outage: RedisOutage,
        on_broken: Callable[[list[tuple[str, str]]], None],
    ) -> None:
        self.store = store
        self.lock = lock  # the worker's: see the module's docstring
        self.outage = outage
        self.on_broken = on_broken
        self.results: list[Finished] = []  # guarded by ``lock``; appended to by ``Worker._finish``
        self.tasks_done = 0  # results Redis recorded, for the worker's status

    def take(self) -> list[Finished]:
        """Everything that waits, now the caller's to deliver (or ``hold`` again)."""
        with self.lock:
            batch, self.results = self.results, []
        return batch

    def hold(self, batch: list[Finished]) -> None:
        """Keep undelivered results (Redis away, or a key they are written to broken) for
        the next try; leases stay renewed."""
        if batch:
            log.debug("cannot deliver %d result(s) now; holding them", len(batch))
            with self.lock:
                self.results[:0] = batch

    def leases(self) -> dict[int, str]:
        """Task id -> lease token of every waiting result (the caller holds ``lock``)."""
        return {task_id: token for task_id, token, _ in self.results}

    def deliver(self) -> None:
        """Send finished results; on a Redis outage keep them and try again later."""
        batch = self.take()
        if not batch:
            return
        try:
            accepted = self.store.complete(batch, on_broken=self.on_broken)
        except redis.RedisError as exc:
            self.outage.failed("delivery", exc)
            self.hold(batch)
            time.sleep(DELIVERY_RETRY_SECONDS)
            return
        self.outage.succeeded()
        self.delivered(batch, accepted)

    def delivered(self, batch: list[Finished], accepted: list[Delivery]) -> None:
        """Count what Redis recorded; hold what it could not record now (a key it writes
        holds the wrong type, reported by the store: see complete.lua) for the next try."""
        self.tasks_done += sum(1 for ok in accepted if ok)
        held = []
        for result, ok in zip(batch, accepted):
            if ok is Delivery.RETRY:
                held.append(result)
            elif not ok:
                log.warning("result of task %d dropped: %s", result[0], ok.reason)
        self.hold(held)
