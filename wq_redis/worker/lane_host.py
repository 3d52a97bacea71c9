"""The worker's side of the fast lane (worker/lane.py): what it does as its warm child
claims, runs and delivers quick PythonTasks itself.

An idle one-slot worker (no GPU, no secret) hands its blocking wait for work to its warm
child (``_claim_in_lane``), which claims, runs and delivers quick tasks on its own until a
claim brings anything else, and records each in a ledger.  The lane reads that ledger and
calls the ``LaneHost`` methods here: they keep this worker's books (running attempts,
resources, metrics, pace, held results) as if the main loop had run the tasks itself, and
take over what the child could not finish (a lost process, an undelivered result, leases
it held unrecorded).

``LaneSide`` is a part of ``Worker`` (worker/loop.py), which holds the state it reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from ..protocol.fields import ALLOCATED_B, TOKEN_B
from ..protocol.resources import Request, given
from ..protocol.store import Claimed, Delivery, QueueStore
from .batch import Attempt
from .child.messages import LaneSpec
from .child.quick import Pace
from .groups import left_more
from .lane import LaneHost, drive
from .outage import BrokenKeys, RedisOutage
from .outbox import Outbox
from .pool import WarmPool
from .resources import Allocator
from .runner import Slot

if TYPE_CHECKING:
    from .loop import WorkerOptions
    from .metrics import WorkerMetrics  # loaded only with --metrics-port (loop.py)

log = logging.getLogger("wq_redis.worker")
LANE_FAILED_RETRY_SECONDS = 1.0  # wait after the lane's claim failed (Redis away), as after a failed claim


class LaneSide(LaneHost):
    """Runs the fast lane for an idle one-slot worker and keeps the books of what it ran."""

    # the worker's state this part reads (set by Worker.__init__)
    options: WorkerOptions
    store: QueueStore
    name: str
    session: str
    workdir: str
    pool: WarmPool
    allocator: Allocator
    metrics: WorkerMetrics | None
    outage: RedisOutage
    outbox: Outbox
    broken_keys: BrokenKeys
    _pace: Pace
    _lock: threading.Lock
    _running: dict[str, Attempt]
    _lane_tokens: set[str]  # leases of the tasks the lane runs
    _lane_allowed: bool
    _lane_ran: bool
    _lane_runs: int
    _queue_had_more: bool
    _redis_settings: dict[str, Any]
    _draining: bool
    _host_blocked: bool
    _abort: bool
    _eligible: list[str]  # the queues the last claim found this worker can take
    # the worker's other parts this one calls
    _claim_arguments: Callable[[dict[str, int], int, str, list[str] | None], dict[str, Any]]
    _screened: Callable[[list[Attempt]], list[Attempt]]
    _run_one: Callable[[Attempt, Slot], None]
    _slot: Callable[[Request, list[Any]], Slot]
    _finish: Callable[[list[tuple[Attempt, dict[str, Any] | None]]], None]
    _give_back: Callable[[dict[int, str]], None]

    def _claim_in_lane(self, free: dict[str, int]) -> list[Claimed]:
        """Block for work as ``Worker._deliver_and_claim`` with ``wake_on=_eligible`` does
        (and update ``_eligible`` as it does), in the warm child, which runs quick tasks
        itself until a claim brings anything else."""
        followers = self._pace.followers()
        self._lane_runs += 1  # each lane leases under a token prefix of its own (see lane_gone)
        claim = self._claim_arguments(free, followers, f"{self.session}~{self._lane_runs}", self._eligible)
        # The lane's claims do not ring the heartbeat: a renewal right after a lane's claim
        # races the lane's own delivery (a quick task is delivered and retrieved within a
        # millisecond), and a lease found gone before the ledger says the task is done
        # stops the child.  The idle beats renew a task the lane runs long in time anyway.
        claim["wake_heartbeat"] = False
        # the lane's own store knows no queue before its first claim: it starts from ours,
        # so that a new queue it is woken for is passed on to the other idle workers
        claim["known_queues"] = self.store.registry_seen
        proc = self.pool.acquire([])
        try:
            spec = LaneSpec(
                self._redis_settings,
                self.options.queue,
                claim,
                self.options.max_result_bytes,
                proc.sandbox_in(self.workdir),
                self._pace.seconds_per_call,
                self.options.durability,
            )
            end = drive(proc, spec, self)
        finally:
            self.pool.release(proc)
        if end.broken:
            self.broken_keys.report(end.broken)
        if end.failed:
            log.error("the fast lane failed; this worker claims without it from now on:\n%s", end.failed)
            self._lane_allowed = False
            self._eligible = []
            return []
        if end.error:
            self.outage.failed("the fast lane's claim", RuntimeError(end.error))
            time.sleep(LANE_FAILED_RETRY_SECONDS)
            return []  # (the queues to wait on stay those last seen)
        self._queue_had_more = left_more(end.claimed, followers)
        if end.eligible is not None:
            self._eligible = end.eligible
        return end.claimed

    def lane_claimed(
        self, task_id: int, token: str, member: str, fields: dict[bytes, bytes], stop: Any
    ) -> tuple[Attempt, Request]:
        attempt = Attempt(Claimed(task_id, token, member, fields))
        self._last_work = time.monotonic()
        with self._lock:
            for stale in [a for a in self._running.values() if a.task_id == task_id]:
                stale.cancel()
            self._running[attempt.token] = attempt
            self._lane_tokens.add(token)
        if self.metrics is not None:
            self.metrics.task_started(fields)
        request = given(member, fields.get(ALLOCATED_B))
        self.allocator.allocate(attempt.token, request)
        attempt.stop_with(stop)
        return attempt, request

    def _lane_ended(self, attempt: Attempt) -> None:
        with self._lock:
            self._lane_tokens.discard(attempt.token)
        attempt.stop_with(None)
        self.allocator.release(attempt.token)
        self._lane_ran = True

    def lane_done(
        self, held: tuple[Attempt, Request], accepted: Delivery, summary: dict[str, Any], wall: float
    ) -> None:
        attempt = held[0]
        self._lane_ended(attempt)
        self._pace.record(1, wall)
        with self._lock:
            self._running.pop(attempt.token, None)
        if self.metrics is not None:
            self.metrics.task_finished(summary if accepted else None)
        self.outbox.delivered([(attempt.task_id, attempt.token, summary)], [accepted])

    def lane_undelivered(self, held: tuple[Attempt, Request], fields: dict[str, Any]) -> None:
        log.warning(
            "the lane could not deliver the result of task %d (Redis away, or a key it writes holds "
            "the wrong type); holding it",
            held[0].task_id,
        )
        self._lane_ended(held[0])
        self._finish([(held[0], fields)])  # held in the outbox, delivered by the main loop

    def lane_lost(self, held: tuple[Attempt, Request], cancelled: bool) -> None:
        """The child died while it ran a task: the task runs again on the per-task path,
        where what killed the child is reported as the task's failure."""
        attempt, request = held
        self._lane_ended(attempt)
        if cancelled or attempt.cancelled:
            log.warning("lease of task %d lost (cancelled or expired): stopped it", attempt.task_id)
            self._finish([(attempt, None)])
            return
        log.warning("task %d lost its Python process; running it on its own", attempt.task_id)
        try:
            attempt.fields = self.store.task_hash(attempt.task_id)  # the ledger holds no arguments
        except redis.RedisError as exc:
            log.warning("cannot read task %d (%s); its lease will expire and it runs again", attempt.task_id, exc)
            with self._lock:
                self._running.pop(attempt.token, None)
            return
        if attempt.fields.get(TOKEN_B, b"").decode() != attempt.token:
            self._finish([(attempt, None)])  # its lease was lost meanwhile
            return
        self.allocator.allocate(attempt.token, request)
        slot = self._slot(request, [])  # the lane runs no GPU tasks
        try:
            for verified in self._screened([attempt]):  # read again: checked again
                self._run_one(verified, slot)
        finally:
            self.allocator.release(attempt.token)

    def lane_gone(self, token_prefix: str) -> None:
        """A task the child had claimed but not yet recorded when it died would wait out
        its lease (and count an attempt): give such leases back now."""
        try:
            leases = self.store.leases_with_prefix(token_prefix + ":")  # its tokens: PREFIX:ID:ATTEMPT
        except redis.RedisError as exc:
            log.warning("cannot look for what the lane held (%s); leases it held will expire", exc)
            return
        with self._lock:
            known = set(self._running) | set(self.outbox.leases().values())
        orphans = {task_id: token for task_id, token in leases.items() if token not in known}
        if orphans:
            log.warning("the lane's process ended holding task(s) %s; handing them back", sorted(orphans))
            try:
                self._give_back(orphans)
            except redis.RedisError as exc:
                log.warning("could not hand them back (%s); their leases will expire", exc)

    def lane_should_stop(self) -> bool:
        return self._draining or self._abort or self._host_blocked

    def lane_interrupt(self) -> None:
        try:
            self.store.ring_worker(self.name)
        except redis.RedisError:
            pass  # the child's block ends after block_seconds anyway
