"""The worker's leases and its record in Redis: the heartbeat thread.

Every ``lease/3`` (at most ``HEARTBEAT_MAX_SECONDS``) the heartbeat renews, in one round
trip, the leases of the running attempts and of the results waiting in the outbox, and the
worker's record (status, liveness); a worker that holds no lease only keeps its record
alive, every ``IDLE_HEARTBEAT_LEASES`` of a lease (at most ``IDLE_HEARTBEAT_MAX_SECONDS``):
with its wait for work (loop.py) that is fewer than one Redis call per lease/3 for an idle
worker.  A claim that takes something while the heartbeat waits an idle period rings the
control key (``_beat_idle``, claim.lua), so the busy worker's beats start at once; without that
ring its leases would still be renewed in time (the idle period is shorter than the lease
the claim gave).  Between beats it blocks in Redis on the worker's control key
(keys.control), in that same round trip: a cancel of a task it runs, a
request of the manager (exit, a blocked host) or a signal rings it, and the renewal runs
at once.  So an idle worker costs Redis one call per beat, and a cancel still reaches a
running task within a round trip.  Its answer names the leases lost (the task was
cancelled, or the lease expired while the worker stalled): those attempts are stopped.
The heartbeat runs in its own thread, which a CPU-bound task cannot starve (tasks run in
other processes), and also runs the reaper under a Redis lock.  On abort (a second
SIGTERM, or the end of a worker's ``--wall-time``) it stops every running attempt and hands
its task back.

``Leases`` is a part of ``Worker`` (worker/loop.py), which holds the state it reads.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import redis

from ..protocol.answers import Renewal
from ..protocol.fields import (
    WORKER_GPUS,
    WORKER_HOST,
    WORKER_METRICS,
    WORKER_NAME,
    WORKER_PID,
    WORKER_RESOURCES,
    WORKER_STARTED,
    WORKER_STATUS,
    WORKER_TAGS,
    WORKER_VERSION,
)
from ..protocol.store import QueueStore
from ..protocol.version import __version__
from .batch import Attempt
from .outage import BrokenKeys, RedisOutage
from .outbox import Outbox
from .resources import Allocator, Capacity

if TYPE_CHECKING:
    from .loop import WorkerOptions

log = logging.getLogger("wq_redis.worker")
HEARTBEAT_MAX_SECONDS = 10.0  # (a cancel is pushed: it does not wait for the next beat)
HEARTBEAT_JOIN_SECONDS = 5.0  # exit waits this long for the heartbeat thread, woken from its wait
HEARTBEATS_PER_LEASE = 3  # a lease survives at least two lost heartbeats in a row
# a worker that holds no lease beats this often (of a lease): a task it claims meanwhile was
# leased for a whole lease by the claim, so the next beat renews it in time even if the
# claim's ring of the control key (which starts the busy beats at once) were lost
IDLE_HEARTBEAT_LEASES = 0.8
IDLE_HEARTBEAT_MAX_SECONDS = 24.0
REAP_EVERY_LEASES = 0.5  # the reaper runs about this often (in leases), under a lock held as long
SILENT_LEASES = 2  # a worker silent this many leases is given up for dead (its leases expired long ago)


class Leases:
    """Renews leases and the worker's record; stops attempts whose lease is gone."""

    # the worker's state this part reads (set by Worker.__init__)
    options: WorkerOptions
    store: QueueStore
    name: str
    capacity: Capacity
    allocator: Allocator
    lease_ms: int
    outage: RedisOutage
    outbox: Outbox
    broken_keys: BrokenKeys
    metrics_address: str
    _lock: threading.Lock
    _running: dict[str, Attempt]  # by lease token, from claim to result
    _lane_tokens: set[str]
    _handed_back: set[str]
    _stopping: threading.Event
    _draining: bool
    _host_blocked: bool  # the manager blocked this host (WorkQueue.block_host): claim nothing
    _new_shards: int | None  # the partitions the queue's manager stored since the worker started
    _changed: threading.Event
    _abort: bool
    _ends_at: float  # time.time() of this worker's end (--wall-time), 0 = none
    _last_beat: float
    _beat_idle: bool  # the heartbeat waits an idle period: a claim that takes something rings it
    _last_work: float  # time.monotonic() of the last task started (groups.py, lane_host.py)
    _heartbeat_thread: threading.Thread | None

    def _status(self) -> str:
        return json.dumps(
            {
                "running": len(self._running),
                "in_use": self.allocator.in_use(),
                "done": self.outbox.tasks_done,
                "draining": self._draining,
                "blocked": self._host_blocked,
            }
        )

    def _heartbeat_loop(self) -> None:
        busy_interval = min(self.options.lease_seconds / HEARTBEATS_PER_LEASE, HEARTBEAT_MAX_SECONDS)
        idle_interval = min(self.options.lease_seconds * IDLE_HEARTBEAT_LEASES, IDLE_HEARTBEAT_MAX_SECONDS)
        reap_every = self.options.lease_seconds * REAP_EVERY_LEASES
        # a worker that just started (often in the place of one that died) tries the reaper
        # a busy beat's period after its start, its beat shortened for it; then every
        # reap_every, at the beats that come due
        next_reap, first_reap = time.monotonic() + busy_interval, True
        failed = False
        while not self._stopping.is_set():
            if self._abort:
                self._stop_and_hand_back()
                self._stopping.wait(busy_interval)
                continue
            if self._ends_at and time.time() >= self._ends_at:
                self._end_of_life()
                continue
            # idle: nothing held, and no task started for a busy beat's period (a worker
            # between short tasks stays on the busy beat: its claims would ring it each time)
            self._beat_idle = self._holds_nothing() and time.monotonic() - self._last_work > busy_interval
            interval = idle_interval if self._beat_idle else busy_interval
            try:
                # (after a failure, wait here: a Redis that is away answers at once)
                if failed and self._stopping.wait(busy_interval):
                    break
                wait = interval
                if self._ends_at:  # wake at the wall time's end, not a beat later
                    wait = max(min(wait, self._ends_at - time.time()), 0.05)
                if first_reap:
                    wait = max(min(wait, next_reap - time.monotonic()), 0.05)
                # the reaper's lock is tried with the renewal that is due for it, at the end of
                # this wait (no call of its own)
                reap_due = time.monotonic() + wait >= next_reap
                if self._heartbeat(wait=wait, reaper_lock_ms=int(self.lease_ms * REAP_EVERY_LEASES) if reap_due else 0):
                    self.store.reap(lock_ms=0, worker_timeout_ms=self.lease_ms * SILENT_LEASES, force=True)
                if reap_due:
                    next_reap, first_reap = time.monotonic() + reap_every, False
                failed = False
                self._last_beat = time.monotonic()
                self.outage.succeeded()
            except redis.RedisError as exc:
                failed = True
                self.outage.failed("heartbeat", exc)
            except Exception:  # the heartbeat thread must never die: leases depend on it
                failed = True
                log.exception("heartbeat error; retrying")

    def _holds_nothing(self) -> bool:
        """No attempt runs and no result waits in the outbox: no lease to renew."""
        with self._lock:
            return not self._running and not self.outbox.results

    def _heartbeat(self, wait: float = 0.0, reaper_lock_ms: int = 0) -> bool:
        """Renew, after waiting up to ``wait`` seconds for the control key (see the module
        doc).  What it holds is read before the wait: a task claimed meanwhile was leased
        for a whole lease by its claim, and one finished meanwhile is renewed in vain; when
        the control key ended the wait (a cancel may be of a task claimed during it), it
        renews again at once with what it holds now.  Returns whether it took the
        reaper's lock (tried with ``reaper_lock_ms``)."""
        renewal = self._renew(wait, reaper_lock_ms)
        reaper = renewal.reaper
        if renewal.rung and not self._stopping.is_set():
            renewal = self._renew(0.0)
        if self._stopping.is_set():
            return False  # woken to stop: the record may be gone already, and must not come back
        if not renewal.registered:
            log.warning("this worker had been given up for dead; registering again")
            self._register()
        if self._obey(renewal):
            self._renew(0.0)  # the record says so now, not a beat later (status, blocked hosts)
        for task_id in renewal.lost:
            with self._lock:
                attempts = [a for a in self._running.values() if a.task_id == task_id]
            for attempt in attempts:
                if attempt.token in self._lane_tokens:
                    # perhaps delivered and retrieved already, its ledger record not read
                    # yet: the lane tells whether it had to stop the task
                    log.debug("lease of task %d gone: the lane checks its ledger", task_id)
                else:
                    log.warning("lease of task %d lost (cancelled or expired): stopping it", task_id)
                attempt.cancel()
        return reaper

    def _renew(self, wait: float, reaper_lock_ms: int = 0) -> Renewal:
        with self._lock:
            # finished results waiting for delivery (Redis was away) keep their leases too
            held = self.outbox.leases()
            held.update({attempt.task_id: token for token, attempt in self._running.items()})
        return self.store.renew(
            self.name,
            self._status(),
            held,
            self.lease_ms,
            self.broken_keys.report,
            wait_seconds=wait,
            reaper_lock_ms=reaper_lock_ms,
        )

    def _end_of_life(self) -> None:
        """The wall time is over (work_queue_worker: "reached the wall time limit"): what
        still runs is stopped and handed back, its attempt not counted, as on a second
        SIGTERM (Work Queue forsakes it); the main loop then delivers the results it holds,
        deregisters and exits 0.  Claims took only tasks whose running_time_max could end
        in time, so this stops only tasks that declared none."""
        log.info(
            "reached the wall time limit of %g s: handing back what still runs, then exiting", self.options.wall_time
        )
        self._abort = True
        self._changed.set()
        self._stop_and_hand_back()
        try:
            self.store.ring_worker(self.name)  # end the main loop's (or the lane's) wait for work now
        except redis.RedisError:
            pass  # its block ends after block_seconds anyway

    def _obey(self, renewal: Renewal) -> bool:
        """What the manager asked at this heartbeat (WorkQueue.shutdown_workers, block_host):
        to exit drains the worker as a SIGTERM does; a blocked host stops its claims (the
        main loop and the lane read ``_host_blocked``) while what runs finishes; a shard
        count stored since the worker started (a manager that keeps the queue in N
        partitions, started after the worker) is adopted by the main loop once nothing runs
        (``Worker._adopt_shards``), unless the worker was given one (``--shards``).  The claim
        that an idle worker sends with its wait for work may still bring one batch, which
        it runs (nothing is lost or handed back)."""
        changed = False
        if renewal.blocked != self._host_blocked:
            log.info("this host is %s for queue %r", "blocked" if renewal.blocked else "unblocked", self.options.queue)
            self._host_blocked, changed = renewal.blocked, True
        if (
            not self.options.shards  # (a count given to the worker is kept)
            and renewal.shards is not None  # (a count gone, or garbage, changes nothing)
            and renewal.shards != self.store.shards
            and renewal.shards != self._new_shards
        ):
            log.info("queue %r is kept in %d partitions now", self.options.queue, renewal.shards)
            self._new_shards, changed = renewal.shards, True
        if renewal.shutdown and not self._draining:
            log.info("the manager asked this worker to shut down: finishing running tasks, then exiting")
            self._draining = changed = True
        if changed:  # end the main loop's wait for work now (its claim is sent with that wait)
            self._changed.set()
            self.store.ring_worker(self.name)
        return changed

    def _end_heartbeat(self) -> None:
        """Stop the heartbeat thread: wake it from its wait (its control key) and wait for
        it, so that no renewal runs after the worker unregisters."""
        self._stopping.set()
        try:
            self.store.ring_worker(self.name, control=True)
        except redis.RedisError:
            pass  # Redis away: its wait ends by itself
        thread = self._heartbeat_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(HEARTBEAT_JOIN_SECONDS)

    def _health(self) -> tuple[bool, str]:
        """For ``/healthz``: healthy while heartbeats (and so lease renewals) reach Redis."""
        silent = time.monotonic() - self._last_beat
        if silent > self.options.lease_seconds:
            return False, f"no heartbeat reached Redis for {silent:.0f} s"
        return True, "draining" if self._draining else "ok"

    def _register(self) -> None:
        record = {
            WORKER_NAME: self.name,
            WORKER_HOST: socket.gethostname(),
            WORKER_PID: os.getpid(),
            WORKER_VERSION: __version__,
            WORKER_RESOURCES: json.dumps(self.capacity.as_dict()),
            WORKER_TAGS: ",".join(self.options.tags),
            WORKER_GPUS: json.dumps([{"index": g.index, "uuid": g.uuid, "model": g.model} for g in self.capacity.gpus]),
            WORKER_STARTED: time.time(),
            WORKER_STATUS: self._status(),
        }
        if self.metrics_address:
            record[WORKER_METRICS] = self.metrics_address  # found by `wq-redis exporter`'s service discovery
        self.store.register_worker(self.name, record)
        self.store.renew(self.name, self._status(), {}, self.lease_ms)  # listed as live at once

    def _give_back(self, held: dict[int, str]) -> None:
        """Hand tasks back to their queues now, their attempts not counted (release, then
        a reap that requeues them at once instead of at the next reaper round)."""
        self.store.release(held)
        self.store.reap(lock_ms=0, worker_timeout_ms=self.lease_ms * SILENT_LEASES, force=True)

    def _stop_and_hand_back(self) -> None:
        """Abort: stop every running attempt and hand its task back, the attempt not
        counted.  Called by the heartbeat thread (the main thread may be running a task
        itself) and again at shutdown for attempts claimed since."""
        with self._lock:
            running = {token: a for token, a in self._running.items() if token not in self._handed_back}
            self._handed_back.update(running)
        if not running:
            return
        for attempt in running.values():
            attempt.cancel()
        try:
            self._give_back({attempt.task_id: token for token, attempt in running.items()})
        except redis.RedisError as exc:
            log.warning("could not hand tasks back (%s); their leases will expire", exc)
