"""The worker: claim tasks that fit, run them, deliver results, keep leases alive.

Threads:
  main       claims (claim.lua) whenever resources are free, delivers finished results in
             pipelines, and otherwise blocks on data-free wake-up keys (never polls);
  runner     one per claimed group: a task and the followers claimed with it when tasks
             are short, run in order on its resources (quick PythonTasks as one batch in
             a warm child, see ``batch``; others by ``TaskRun.execute``).  A worker with
             one slot (one core, or one GPU and no core) runs its groups in the main
             thread instead (the two thread handoffs per group were a third of a
             task's round trip: the round trip p50 of ``python -m bench.run --systems
             wq``, ``make bench``), claiming its next batch while the child runs one;
  lane       an idle one-slot worker (no GPU, no secret) hands its blocking wait to its
             warm child, which claims, runs and delivers quick PythonTasks itself and
             records them in a ledger this worker reads (``lane``): a task then takes the
             hops of a hand-written queue;
  heartbeat  renews leases every ``lease/3`` (every ``lease/2`` while it holds none) from
             its own thread, which a CPU-bound task cannot starve: tasks run in other
             processes; between beats it waits on the worker's control key, where cancels
             are pushed (leases.py); it also runs the reaper under a Redis lock.
SIGTERM drains (finish running tasks, then exit); a second SIGTERM stops at once and hands
the running tasks back without counting the attempt (the heartbeat thread does, so a task
running in the main thread is stopped too).  A worker with ``--wall-time`` claims only tasks
that can end before its end (claim.lua), and at its end stops as a second SIGTERM does
(leases.py), before the batch system's allocation ends.

The parts of ``Worker``, each in a module of its own:
  loop.py        the claim loop (this module): claim, prefetch, drain, exit;
  groups.py      a claimed group on its slot: started, screened, run, finished (``Groups``);
  screening.py   the check of a claimed hash before anything of it is read (``Screening``);
  outbox.py      finished results until Redis recorded them (``Outbox``);
  leases.py      the heartbeat: leases, the worker's record, the reaper, abort (``Leases``);
  lane_host.py   the worker's side of the fast lane (``LaneSide``);
  outage.py      what the log says of Redis away or a broken key.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from ..protocol.connection import LONGEST_WAIT_SECONDS, settings_of
from ..protocol.resources import Request
from ..protocol.signing import Signer
from ..protocol.sizes import MAX_TASK_BYTES, MB
from ..protocol.store import Claimed
from .batch import Attempt
from .cache import FileCache, FunctionBodies
from .child.quick import Pace
from .groups import Groups, groups, left_more
from .lane_host import LaneSide
from .leases import Leases
from .outage import BrokenKeys, RedisOutage, redis_address
from .outbox import DELIVERY_RETRY_SECONDS, Outbox
from .partitions import worker_store
from .pool import WarmPool
from .resources import Allocator, Capacity
from .screening import Screening
from .workdir import WorkDir, remove_orphans

if TYPE_CHECKING:
    from .metrics import WorkerMetrics

log = logging.getLogger("wq_redis.worker")
BATCH_BYTES = 4 * 1024 * 1024  # the followers a claim brings stay under this many bytes of hash fields
HELD_RESULTS_RETRY_SECONDS = 1.0  # results a delivery could not record are sent again this often
CLAIM_RETRY_SECONDS = 1.0  # wait after a failed claim (Redis away): the loop would otherwise spin
DRAIN_POLL_SECONDS = 0.2  # a draining worker looks this often whether its tasks are done (a result also wakes it)
SHUTDOWN_DELIVERY_SECONDS = 30.0  # exit tries this long to deliver held results; then their leases expire
# a runner thread still returning from a group it finished (its slot is free already) must
# not delay the next group claimed for that slot: a few threads more than slots
SPARE_RUNNER_THREADS = 2
# An idle worker makes one Redis call per wait for work and one per idle heartbeat
# (leases.py): about one per lease/3, whatever the pool's size (issue 17: ~4 us of Redis
# CPU per idle worker per second).  Longer waits would save little more and make a lost
# wake-up (rare: claim.lua passes every token on) cost more.
IDLE_WAIT_MAX_SECONDS = LONGEST_WAIT_SECONDS


def idle_wait_seconds(options: WorkerOptions) -> float:
    """How long an idle worker waits for work before it looks again by itself."""
    return options.block_seconds or min(options.lease_seconds, IDLE_WAIT_MAX_SECONDS)


@dataclass
class WorkerOptions:
    queue: str = "default"
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    idle_timeout: float = 0.0  # seconds; 0 = never
    burst: bool = False  # exit once nothing is left that this worker can take
    lease_seconds: float = 30.0
    # an idle worker's wait for work (its claim is sent with it, one Redis call): wake-ups
    # (a submit, a finished task, a signal, the manager's requests) end it, so its bound is
    # only the longest a wake-up lost to a crash or another client's garbage can delay a
    # claim; 0: the lease, at most IDLE_WAIT_MAX_SECONDS (see ``idle_wait_seconds``)
    block_seconds: float = 0.0
    reserve_after: float = 30.0  # seconds a too-big-for-now task waits before smaller ones yield
    workdir: str | None = None
    max_result_bytes: int = 256 * 1024 * 1024
    metrics_ports: range | None = None  # serve Prometheus metrics on the first free one
    metrics_addr: str = "0.0.0.0"
    metrics_advertise: str | None = None  # host others scrape (default: metrics_addr or hostname)
    secret: bytes | None = None  # verify tasks and sign results (HMAC-SHA256)
    cache_mb: int = 1024  # size of the cache of inputs declared with cache=True
    max_task_bytes: int = MAX_TASK_BYTES  # a task holding more (arguments, function, inputs) fails unloaded
    wall_time: float = 0.0  # seconds this worker may live (work_queue_worker --wall-time); 0 = no end
    durability: str = "none"  # WAIT after each delivery: none, replica, aof (protocol/durability.py)
    shards: int = 0  # partitions of the queue (protocol/partitions.py); 0: as stored in Redis, else 1


class Worker(Groups, LaneSide, Leases):
    """One worker process serving one queue; its parts (``Groups``, ``LaneSide``,
    ``Leases``) live in modules of their own and share the state set up here."""

    def __init__(self, client: redis.Redis, capacity: Capacity, options: WorkerOptions) -> None:
        self.options = options
        self.client = client
        self.store = worker_store(client, options.queue, options.shards, options.durability)
        self.capacity = capacity
        self.allocator = Allocator(capacity)
        host = socket.gethostname()
        self.name = options.name if options.name and "@" in options.name else f"{options.name or os.getpid()}@{host}"
        self._own_workdir: WorkDir | None = None
        if options.workdir is None:
            remove_orphans()  # directories of workers killed before they could remove theirs
            self._own_workdir = WorkDir()
            self.workdir = self._own_workdir.path
        else:
            self.workdir = options.workdir
        os.makedirs(self.workdir, exist_ok=True)
        # one cache per worker process: workers may share a --workdir
        self.files = FileCache(
            os.path.join(self.workdir, f"cache.{os.getpid()}"),
            options.cache_mb * MB,
            lambda digest: self.store.file(digest, options.max_task_bytes),
            options.max_task_bytes,
        )
        # an idle one-slot worker lets its warm child wait for work (worker/lane.py); not
        # with a secret (the child holds no key) nor GPUs (a child is bound to its GPUs)
        self._inline = capacity.cores + len(capacity.gpus) == 1  # one slot: run groups in the main thread
        self._lane_allowed = self._inline and not options.secret and not capacity.gpus and not self.store.sharded
        self.pool = WarmPool(max_idle=max(capacity.cores, 1), hide_gpus=bool(capacity.gpus), ledgers=self._lane_allowed)
        # one runner thread per task slot (every task holds a core or a GPU), reused
        self._threads = ThreadPoolExecutor(
            max_workers=capacity.cores + len(capacity.gpus) + SPARE_RUNNER_THREADS, thread_name_prefix="task"
        )
        self.lease_ms = int(options.lease_seconds * 1000)
        self.session = f"{self.name}#{secrets.token_hex(4)}"  # lease tokens start with this
        self._running: dict[str, Attempt] = {}  # by lease token, from claim to result
        self._pace = Pace()  # how many tasks to claim at once
        self._busy: dict[str, Request] = {}  # slot (its first task's token) -> what it holds
        self._prefetched: tuple[list[Attempt], Request] | None = None  # what a busy slot runs next
        self._queue_had_more = False  # the last claim took all the followers it asked for
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._blocked = False
        self._draining = False
        self._host_blocked = False  # the manager blocked this host (leases.py reads it at each heartbeat)
        # the partitions the queue's manager stored since this worker started (read at each
        # heartbeat: leases.py), adopted by the main loop once nothing is running
        self._new_shards: int | None = None
        self._abort = False
        self._ends_at = time.time() + options.wall_time if options.wall_time > 0 else 0.0  # claims read it
        self._last_beat = time.monotonic()
        self._beat_idle = False
        self._last_work = 0.0
        self._heartbeat_thread: threading.Thread | None = None
        self._wait_seconds = idle_wait_seconds(options)
        self._idle_block = self._wait_seconds  # this idle wait's bound (_loop: never past the idle timeout)
        self._looked = False  # the last idle wait's claim found nothing, and nothing changed since
        # the queues the last claim found this worker can take: an idle wait blocks on their wake keys
        self._eligible: list[str] = []
        self.metrics: WorkerMetrics | None = None
        self.metrics_address = ""
        if options.metrics_ports is not None:
            # imported here: prometheus_client, psutil's process readings and the HTTP
            # server are no part of a worker without --metrics-port
            from .metrics import WorkerMetrics

            self.metrics = WorkerMetrics(
                self.name,
                capacity,
                self.allocator,
                options.tags,
                running=lambda: len(self._running),
                healthy=self._health,
            )
        self.signer = Signer(options.secret, options.queue) if options.secret else None
        self.outage = RedisOutage(redis_address(client))
        self.broken_keys = BrokenKeys(self.metrics.broken_key if self.metrics is not None else None)
        self.outbox = Outbox(self.store, self._lock, self.outage, self.broken_keys.report)
        self.functions = FunctionBodies(self.store, options.max_task_bytes)
        self.screening = Screening(self.signer, self.store.keys)
        self._total = capacity.as_dict()  # what claims may pack into; fixed for the worker's life
        self._handed_back: set[str] = set()  # tokens of attempts handed back on abort
        self._reserve_after_ms = int(options.reserve_after * 1000)
        self._redis_settings = settings_of(client)
        self._lane_ran = False  # a lane ran tasks since the main loop last looked
        self._lane_tokens: set[str] = set()  # leases of the tasks the lane runs
        self._lane_runs = 0

    # -- signals ----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        # The main loop and the heartbeat wait in Redis (BLPOP), where a signal cannot end
        # the wait: Python writes each signal's number to this pipe, and a thread that
        # reads it rings the worker's own keys, which end both waits at once.
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._wake_on_signals, args=(read_fd,), name="signals", daemon=True).start()

    def _wake_on_signals(self, read_fd: int) -> None:
        while os.read(read_fd, 64):
            try:
                self.store.ring_worker(self.name, control=True)
            except redis.RedisError:
                pass  # Redis away: the waits end by themselves (block_seconds, the heartbeat)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Only flags: taking a lock here (Event.set) could deadlock with the interrupted
        # main thread; the wait it interrupted ends by _wake_on_signals.
        if self._draining:
            log.warning("second %s: stopping now, handing running tasks back", signal.Signals(signum).name)
            self._abort = True
        else:
            log.info("%s: finishing running tasks, then exiting", signal.Signals(signum).name)
            self._draining = True

    # -- main loop --------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; the work directory is removed however this ends."""
        try:
            return self._serve()
        finally:
            self._remove_workdir()

    def _serve(self) -> int:
        if self.metrics is not None:
            o = self.options
            self.metrics_address = self.metrics.serve(
                o.metrics_addr, o.metrics_ports or range(0, 1), o.metrics_advertise
            )
            log.info("Prometheus metrics: http://%s/metrics (bound to %s)", self.metrics_address, o.metrics_addr)
        if not self.outage.ride_out("registration", self._register, lambda: self._draining or self._abort):
            return 0  # stopped while Redis took no writes: nothing registered, nothing to hand back
        heartbeat = self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name="heartbeat", daemon=True
        )
        heartbeat.start()
        # What is alive now (modules, clients, the metrics server) lives as long as the
        # worker: out of the collector's sight, its full collections scan only what tasks
        # leave behind (they had cost short tasks ~10% of the worker's time: the workers'
        # py-spy table of ``python -m bench.profile_wq --phases per_call``, ``make bench-profile``).
        gc.freeze()
        log.info(
            "worker %s on queue %r: %s, tags %s",
            self.name,
            self.options.queue,
            self.capacity.as_dict(),
            self.options.tags or "all",
        )
        try:
            self._loop()
        finally:
            self._shutdown()
            self._end_heartbeat()
        return 0

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while not self._abort:
            if self._new_shards is not None:
                self._adopt_shards()
            if self._draining:
                self.outbox.deliver()
                if not self._running and not self.outbox.results:
                    return
                self._changed.wait(DRAIN_POLL_SECONDS)
                self._changed.clear()
                continue
            free = self.allocator.free()
            claimed: list[Claimed] = []
            looked, self._looked = self._looked, False
            can_take_more = (free["cores"] >= 1 or free["gpus"] >= 1) and not self._host_blocked
            if can_take_more:
                # (not when the last idle wait's claim found nothing and nothing changed since)
                if not (looked and not self._running and not self.outbox.results):
                    claimed = self._deliver_and_claim(free)
                    for group in groups(claimed):
                        self._start(group)
            elif not self._prefetch():
                self.outbox.deliver()
            if claimed or self._running:
                idle_since = time.monotonic()
                if claimed:
                    continue
            elif self.options.burst and not self.outbox.results:
                log.info("burst mode: nothing left for this worker, exiting")
                return
            elif self.options.idle_timeout and time.monotonic() - idle_since > self.options.idle_timeout:
                log.info("idle for %.0f s, exiting", self.options.idle_timeout)
                return
            if not can_take_more or self.outbox.results:
                wait = self._wait_seconds
                if self.outbox.results:  # held (Redis away, a key it writes broken): try again soon
                    wait = min(wait, HELD_RESULTS_RETRY_SECONDS)
                self._changed.wait(wait)
                self._changed.clear()
                continue
            self._idle_block = self._wait_seconds
            if self.options.idle_timeout:  # an idle worker leaves on time, whatever the bound of its wait
                left = self.options.idle_timeout - (time.monotonic() - idle_since)
                self._idle_block = max(min(self._idle_block, left), 0.05)
            if self._ends_at:  # ... and at the end of its wall time
                self._idle_block = max(min(self._idle_block, self._ends_at - time.time()), 0.05)
            if not looked:  # idle after work: close what the work opened (runners' calls, the lane's turn)
                self.store.close_idle_connections()
            if self._lane_allowed:
                claimed = self._claim_in_lane(free)
                if self._lane_ran:
                    self._lane_ran, idle_since = False, time.monotonic()
            else:
                claimed = self._deliver_and_claim(free, wake_on=self._eligible)
            # (the wait's claim ran at its end: the next turn need not look again at once)
            self._looked = not claimed
            for group in groups(claimed):
                self._start(group)

    def _adopt_shards(self) -> None:
        """Claim across the partitions the queue's manager stored since this worker started
        (a worker started before its manager, which then kept the queue in N partitions,
        would otherwise serve partition 0 only and leave the others' tasks waiting).  Done
        between claims, once nothing runs and no result waits: a task's calls go to its
        partition, and what this worker holds was claimed under the old count."""
        with self._lock:
            if self._running or self.outbox.results or self._prefetched is not None:
                return
            count, self._new_shards = self._new_shards, None
        if count is None or count == self.store.shards:
            return
        store = worker_store(self.client, self.options.queue, count, self.options.durability)
        self.store = self.outbox.store = self.functions.store = store
        self._lane_allowed = self._lane_allowed and not store.sharded  # (the lane claims in one partition)
        log.info("queue %r is kept in %d partitions now: this worker claims across them", self.options.queue, count)

    def _prefetch(self) -> bool:
        """Every slot is busy with short tasks: deliver, and claim the group that a slot
        runs next the moment it is done, in one round trip, so the worker's Redis time
        overlaps its running time instead of leaving the slot idle.  At most one group
        waits, and only while tasks are short (a batch is about BATCH_SECONDS of work)."""
        with self._lock:
            if (
                self._prefetched is not None
                or not self._busy
                or not self._pace.followers()
                or not self._queue_had_more
                or self._draining
                or self._abort
                or self._host_blocked
            ):
                return False
            request = next(reversed(self._busy.values()))
        claimed = self._deliver_and_claim(request.as_dict())
        for group in groups(claimed)[:1]:  # max_tasks is 1 for one slot's resources
            self._start(group, after=request)
        return True

    def _claim_ahead(self) -> None:
        """A one-slot worker's main thread, while the warm child runs a batch: deliver and
        claim the next batch (``_prefetch``), so that Redis' time overlaps the child's."""
        try:
            self._prefetch()
        except Exception:  # the batch running now must not be lost to a bug here
            log.exception("claiming the next batch ahead failed")

    def _deliver_and_claim(self, free: dict[str, int], wake_on: list[str] | None = None) -> list[Claimed]:
        """Deliver finished results and claim what fits, in one round trip; the queues the
        claim found this worker can take become ``_eligible``.

        With ``wake_on`` (the queues the worker can take from), first block until one of
        them (or our own wake key) rings, or ``block_seconds`` pass: the claim is sent in the
        same pipeline and runs the moment the block ends, without a second round trip."""
        batch = self.outbox.take()
        followers = self._pace.followers()
        self._blocked = wake_on is not None
        try:
            claimed, eligible, accepted = self.store.claim(
                **self._claim_arguments(free, followers, self.session, wake_on),
                results=batch,
                on_broken=self.broken_keys.report,
            )
        except redis.RedisError as exc:  # down, read-only (failover), OOM, busy script...
            self.outage.failed("claim", exc)
            self.outbox.hold(batch)
            time.sleep(CLAIM_RETRY_SECONDS)
            # the queues to wait on stay those last seen (_eligible): a wait on none of them would
            # hear only of new queues, and tasks submitted when Redis is back would wait it out
            return []
        finally:
            self._blocked = False
        self.outage.succeeded()
        self._eligible = eligible
        self.outbox.delivered(batch, accepted)
        self._queue_had_more = left_more(claimed, followers)
        return claimed

    def _claim_arguments(
        self, free: dict[str, int], followers: int, token_prefix: str, wake_on: list[str] | None
    ) -> dict[str, Any]:
        """``QueueStore.claim``'s arguments for this worker's claim (its own or its lane's)."""
        return dict(
            worker=self.name,
            free=free,
            tags=self.options.tags,
            max_tasks=free["cores"] + free["gpus"],
            lease_ms=self.lease_ms,
            token_prefix=token_prefix,
            total=self._total,
            reserve_after_ms=self._reserve_after_ms,
            followers=followers,
            follower_bytes=BATCH_BYTES,
            wake_on=wake_on,
            block_seconds=self._idle_block,
            wake_heartbeat=self._beat_idle,
            max_task_bytes=self.options.max_task_bytes,
            ends_at=self._ends_at,
        )

    # -- the end -----------------------------------------------------------------------
    def _shutdown(self) -> None:
        if self._abort:
            self._stopping.set()  # no more renewals: the leases are being handed back
            self._stop_and_hand_back()
        deadline = time.monotonic() + SHUTDOWN_DELIVERY_SECONDS
        while self.outbox.results and time.monotonic() < deadline:
            self.outbox.deliver()
            if self.outbox.results:  # held: Redis away, or a key complete.lua writes is broken
                time.sleep(DELIVERY_RETRY_SECONDS)
        self._end_heartbeat()  # else a last heartbeat could find the record gone and register again
        try:
            self.store.unregister_worker(self.name)
        except redis.RedisError:
            pass
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.pool.close()
        if self.metrics is not None:
            self.metrics.close()
        self.files.close()
        self._remove_workdir()

    def _remove_workdir(self) -> None:
        if self._own_workdir is not None:
            self._own_workdir.remove()
