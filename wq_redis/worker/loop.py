"""The worker: claim tasks that fit, run them, deliver results, keep leases alive.

Threads:
  main       claims (claim.lua) whenever resources are free, delivers finished results in
             pipelines, and otherwise blocks on data-free wake-up keys (never polls);
  runner     one per claimed group: a task and the followers claimed with it when tasks
             are short, run in order on its resources (quick PythonTasks as one batch in
             a warm child, see ``batch``; others by ``TaskRun.execute``).  A worker with
             one slot (one core, or one GPU and no core) runs its groups in the main
             thread instead (the two thread handoffs per group were a third of a
             task's round trip), claiming its next batch while the child runs one;
  lane       an idle one-slot worker (no GPU, no secret) hands its blocking wait to its
             warm child, which claims, runs and delivers quick PythonTasks itself and
             records them in a ledger this worker reads (``lane``): a task then takes the
             hops of a hand-written queue;
  heartbeat  renews leases every ``lease/3`` (at most 0.5 s, so cancels land fast) from its
             own thread, which a CPU-bound task cannot starve: tasks run in other processes;
             it also runs the reaper under a Redis lock.
SIGTERM drains (finish running tasks, then exit); a second SIGTERM stops at once and hands
the running tasks back without counting the attempt (the heartbeat thread does, so a task
running in the main thread is stopped too).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis

from ..protocol import packing
from ..protocol.codes import Result
from ..protocol.connection import settings_of
from ..protocol.resources import Request, parse_class, split_member
from ..protocol.signing import SignatureError, Signer, verify_function_body
from ..protocol.sizes import MAX_TASK_BYTES
from ..protocol.store import Claimed, Delivery, QueueStore
from ..protocol.version import __version__
from .batch import Attempt, Ending, Pace, QuickBatch, attempt_results, calls_of, quick_spec
from .cache import FileCache
from .lane import LaneHost, LaneSpec, drive
from .metrics import WorkerMetrics
from .outage import RedisOutage, redis_address
from .pool import WarmPool
from .resources import GPU, Allocator, Capacity
from .runner import Outcome, Slot, TaskRun, named_host, result_fields
from .workdir import WorkDir, remove_orphans

log = logging.getLogger("wq_redis.worker")
HEARTBEAT_MAX_SECONDS = 0.5  # also how fast a cancel reaches a running task
BROKEN_KEY_LOG_SECONDS = 60.0  # a key of the wrong type is logged at most this often (it is counted every time)
BATCH_BYTES = 4 * 1024 * 1024  # ... while their hash fields stay under this many bytes


def _groups(claimed: list[Claimed]) -> list[list[Claimed]]:
    """Claimed tasks grouped by slot: each task with the followers claimed after it."""
    groups: list[list[Claimed]] = []
    for task in claimed:
        if task.follows and groups:
            groups[-1].append(task)
        else:
            groups.append([task])
    return groups


@dataclass
class WorkerOptions:
    queue: str = "default"
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    idle_timeout: float = 0.0  # seconds; 0 = never
    burst: bool = False  # exit once nothing is left that this worker can take
    lease_seconds: float = 30.0
    block_seconds: float = 1.0  # longest a lost wake-up can delay a claim
    reserve_after: float = 30.0  # seconds a too-big-for-now task waits before smaller ones yield
    workdir: str | None = None
    max_result_bytes: int = 256 * 1024 * 1024
    metrics_ports: range | None = None  # serve Prometheus metrics on the first free one
    metrics_addr: str = "0.0.0.0"
    metrics_advertise: str | None = None  # host others scrape (default: metrics_addr or hostname)
    secret: bytes | None = None  # verify tasks and sign results (HMAC-SHA256)
    cache_mb: int = 1024  # size of the cache of inputs declared with cache=True
    max_task_bytes: int = MAX_TASK_BYTES  # a task holding more (arguments, function, inputs) fails unloaded


class Worker(LaneHost):
    def __init__(self, client: redis.Redis, capacity: Capacity, options: WorkerOptions) -> None:
        self.options = options
        self.store = QueueStore(client, options.queue)
        self.capacity = capacity
        self.allocator = Allocator(capacity)
        host = socket.gethostname()
        self.name = options.name if options.name and "@" in options.name else f"{options.name or os.getpid()}@{host}"
        self._own_workdir: WorkDir | None = None
        if options.workdir is None:
            remove_orphans()  # directories of workers killed before they could remove theirs
            self._own_workdir = WorkDir()
        self.workdir = options.workdir or self._own_workdir.path  # type: ignore[union-attr]
        os.makedirs(self.workdir, exist_ok=True)
        # one cache per worker process: workers may share a --workdir
        self.files = FileCache(
            os.path.join(self.workdir, f"cache.{os.getpid()}"),
            options.cache_mb * 1024 * 1024,
            lambda digest: self.store.file(digest, options.max_task_bytes),
        )
        # an idle one-slot worker lets its warm child wait for work (worker/lane.py); not
        # with a secret (the child holds no key) nor GPUs (a child is bound to its GPUs)
        self._inline = capacity.cores + len(capacity.gpus) == 1  # one slot: run groups in the main thread
        self._lane_allowed = self._inline and not options.secret and not capacity.gpus
        self.pool = WarmPool(max_idle=max(capacity.cores, 1), hide_gpus=bool(capacity.gpus), ledgers=self._lane_allowed)
        # one runner thread per task slot (every task holds a core or a GPU), reused
        self._threads = ThreadPoolExecutor(
            max_workers=capacity.cores + len(capacity.gpus) + 2, thread_name_prefix="task"
        )
        self.lease_ms = int(options.lease_seconds * 1000)
        self.session = f"{self.name}#{secrets.token_hex(4)}"  # lease tokens start with this
        self._running: dict[str, Attempt] = {}  # by lease token, from claim to result
        self._pace = Pace()  # how many tasks to claim at once
        self._busy: dict[str, Request] = {}  # slot (its first task's token) -> what it holds
        self._prefetched: tuple[list[Attempt], Request] | None = None  # what a busy slot runs next
        self._queue_had_more = False  # the last claim took all the followers it asked for
        self._outbox: list[tuple[int, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._blocked = False
        self._draining = False
        self._abort = False
        self._functions: OrderedDict[str, bytes] = OrderedDict()
        self.tasks_done = 0
        self._last_beat = time.monotonic()
        self.metrics: WorkerMetrics | None = None
        self.metrics_address = ""
        if options.metrics_ports is not None:
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
        self._total = capacity.as_dict()  # what claims may pack into; fixed for the worker's life
        self._handed_back: set[str] = set()  # tokens of attempts handed back on abort
        self._reserve_after_ms = int(options.reserve_after * 1000)
        self._redis_settings = settings_of(client)
        self._lane_ran = False  # a lane ran tasks since the main loop last looked
        self._lane_tokens: set[str] = set()  # leases of the tasks the lane runs
        self._lane_runs = 0
        self._broken_logged: dict[str, float] = {}  # key of the wrong type -> when last logged (monotonic)

    # -- signals ----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Only flags: taking a lock here (Event.set) could deadlock with the interrupted
        # main thread.  Every wait of the main loop is bounded by block_seconds.
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
        self._register()
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heartbeat.start()
        # What is alive now (modules, clients, the metrics server) lives as long as the
        # worker: out of the collector's sight, its full collections scan only what tasks
        # leave behind (they had cost short tasks ~10% of the worker's time).
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
            self._stopping.set()
            heartbeat.join(5)
        return 0

    def _loop(self) -> None:
        idle_since = time.monotonic()
        eligible: list[str] = []
        while not self._abort:
            if self._draining:
                self._deliver()
                if not self._running and not self._outbox:
                    return
                self._changed.wait(0.2)
                self._changed.clear()
                continue
            free = self.allocator.free()
            claimed: list[Claimed] = []
            can_take_more = free["cores"] >= 1 or free["gpus"] >= 1
            if can_take_more:
                claimed, eligible = self._deliver_and_claim(free)
                for group in _groups(claimed):
                    self._start(group)
            elif not self._prefetch():
                self._deliver()
            if claimed or self._running:
                idle_since = time.monotonic()
                if claimed:
                    continue
            elif self.options.burst and not self._outbox:
                log.info("burst mode: nothing left for this worker, exiting")
                return
            elif self.options.idle_timeout and time.monotonic() - idle_since > self.options.idle_timeout:
                log.info("idle for %.0f s, exiting", self.options.idle_timeout)
                return
            if not can_take_more or self._outbox:
                self._changed.wait(self.options.block_seconds)
                self._changed.clear()
                continue
            if self._lane_allowed:
                claimed, eligible = self._claim_in_lane(free, eligible)
                if self._lane_ran:
                    self._lane_ran, idle_since = False, time.monotonic()
            else:
                claimed, eligible = self._deliver_and_claim(free, wake_on=eligible)
            for group in _groups(claimed):
                self._start(group)

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
            ):
                return False
            request = next(reversed(self._busy.values()))
        claimed, _ = self._deliver_and_claim(request.as_dict())
        for group in _groups(claimed)[:1]:  # max_tasks is 1 for one slot's resources
            self._start(group, after=request)
        return True

    def _claim_ahead(self) -> None:
        """A one-slot worker's main thread, while the warm child runs a batch: deliver and
        claim the next batch (``_prefetch``), so that Redis' time overlaps the child's."""
        try:
            self._prefetch()
        except Exception:  # the batch running now must not be lost to a bug here
            log.exception("claiming the next batch ahead failed")

    def _deliver_and_claim(
        self, free: dict[str, int], wake_on: list[str] | None = None
    ) -> tuple[list[Claimed], list[str]]:
        """Deliver finished results and claim what fits, in one round trip.

        With ``wake_on`` (the queues the worker can take from), first block until one of
        them (or our own wake key) rings, or ``block_seconds`` pass: the claim is sent in the
        same pipeline and runs the moment the block ends, without a second round trip."""
        batch = self._take_outbox()
        followers = self._pace.followers()
        self._blocked = wake_on is not None
        try:
            claimed, eligible, accepted = self.store.claim(
                **self._claim_arguments(free, followers, self.session, wake_on),
                results=batch,
                on_broken=self._report_broken,
            )
        except redis.RedisError as exc:  # down, read-only (failover), OOM, busy script...
            self.outage.failed("claim", exc)
            self._hold(batch)
            time.sleep(1.0)
            return [], []
        finally:
            self._blocked = False
        self.outage.succeeded()
        self._delivered(batch, accepted)
        # a claim that got every follower it asked for probably left more behind: worth
        # prefetching; one that got fewer drained its queue (no claim is wasted on it)
        self._queue_had_more = bool(claimed) and sum(packing.live_count(c.fields) for c in claimed) > followers
        return claimed, eligible

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
            block_seconds=self.options.block_seconds,
            max_task_bytes=self.options.max_task_bytes,
        )

    def _report_broken(self, keys: list[tuple[str, str]]) -> None:
        """Keys of the queue a claim, a delivery or a heartbeat could not read or write
        (wrong type): skipped (results that must be written there are held and sent
        again, see ``_delivered``), counted every time, logged at most once a minute each."""
        now = time.monotonic()
        for key, error in keys:
            if self.metrics is not None:
                self.metrics.broken_key(key)
            if now - self._broken_logged.get(key, float("-inf")) >= BROKEN_KEY_LOG_SECONDS:
                self._broken_logged[key] = now
                log.error(
                    "cannot read %s (%s): skipped, the rest of the queue is served (results to be written "
                    "there are held until it is repaired); delete or repair that key (this message repeats at "
                    "most every %.0f s)",
                    key,
                    error,
                    BROKEN_KEY_LOG_SECONDS,
                )

    # -- the fast lane (worker/lane.py) ------------------------------------------------
    def _claim_in_lane(self, free: dict[str, int], eligible: list[str]) -> tuple[list[Claimed], list[str]]:
        """Block for work as ``_deliver_and_claim`` with ``wake_on`` does, in the warm
        child, which runs quick tasks itself until a claim brings anything else."""
        followers = self._pace.followers()
        self._lane_runs += 1  # each lane leases under a token prefix of its own (see lane_gone)
        claim = self._claim_arguments(free, followers, f"{self.session}~{self._lane_runs}", eligible)
        proc = self.pool.acquire([])
        try:
            spec = LaneSpec(
                self._redis_settings,
                self.options.queue,
                claim,
                self.options.max_result_bytes,
                proc.sandbox_in(self.workdir),
                self._pace.seconds_per_task,
            )
            end = drive(proc, spec, self)
        finally:
            self.pool.release(proc)
        if end.broken:
            self._report_broken(end.broken)
        if end.failed:
            log.error("the fast lane failed; this worker claims without it from now on:\n%s", end.failed)
            self._lane_allowed = False
            return [], []
        if end.error:
            self.outage.failed("the fast lane's claim", RuntimeError(end.error))
            time.sleep(1.0)
            return [], []
        self._queue_had_more = bool(end.claimed) and sum(packing.live_count(c.fields) for c in end.claimed) > followers
        return end.claimed, eligible if end.eligible is None else end.eligible

    def lane_claimed(
        self, task_id: int, token: str, member: str, fields: dict[bytes, bytes], stop: Any
    ) -> tuple[Attempt, Request]:
        attempt = Attempt(Claimed(task_id, token, member, fields))
        with self._lock:
            for stale in [a for a in self._running.values() if a.task_id == task_id]:
                stale.cancel()
            self._running[attempt.token] = attempt
            self._lane_tokens.add(token)
        if self.metrics is not None:
            self.metrics.task_started(fields)
        request = parse_class(split_member(member)[0])
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
        self._delivered([(attempt.task_id, attempt.token, summary)], [accepted])

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
        if attempt.fields.get(b"tok", b"").decode() != attempt.token:
            self._finish([(attempt, None)])  # its lease was lost meanwhile
            return
        self.allocator.allocate(attempt.token, request)
        slot = Slot(
            request, [], self.workdir, self.pool, self._function, self.options.max_result_bytes, self.signer, self.files
        )
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
            known = set(self._running) | {token for _, token, _ in self._outbox}
        orphans = {task_id: token for task_id, token in leases.items() if token not in known}
        if orphans:
            log.warning("the lane's process ended holding task(s) %s; handing them back", sorted(orphans))
            try:
                self._give_back(orphans)
            except redis.RedisError as exc:
                log.warning("could not hand them back (%s); their leases will expire", exc)

    def lane_should_stop(self) -> bool:
        return self._draining or self._abort

    def lane_interrupt(self) -> None:
        try:
            self.store.ring_worker(self.name)
        except redis.RedisError:
            pass  # the child's block ends after block_seconds anyway

    # -- tasks ------------------------------------------------------------------------
    def _start(self, group: list[Claimed], after: Request | None = None) -> None:
        """Start a task and its followers: they run one after another on its resources.

        ``after``: a prefetched group, left for the next slot holding ``after`` that is
        done (when none holds it any more, it starts now)."""
        refused = [task for task in group if task.refused]
        if refused:
            self._refuse(refused)
            group = [task for task in group if not task.refused]
            if not group:
                return
        lead = group[0]
        request = parse_class(split_member(lead.member)[0])
        attempts = [Attempt(task) for task in group]
        ids = {a.task_id for a in attempts}
        with self._lock:
            # Our own earlier attempt of a task lost its lease (we were stalled) and the
            # task came back to us: that attempt must stop, its result is void.
            for stale in [a for a in self._running.values() if a.task_id in ids]:
                stale.cancel()
            for attempt in attempts:
                self._running[attempt.token] = attempt
            waits = after is not None and after in self._busy.values()
            if waits:  # claimed within that slot's resources: it runs there, whatever its class
                self._prefetched = (attempts, after)  # the slot's runner takes it when done
        if self.metrics is not None:
            for task in group:
                for _ in range(packing.live_count(task.fields)):  # a pack's members each
                    self.metrics.task_started(task.fields)
        if waits or self._abort:  # on abort, _stop_and_hand_back gives them back unstarted
            return
        gpus = self.allocator.allocate(lead.token, request)
        with self._lock:
            self._busy[lead.token] = request
        if self._inline:
            self._execute(attempts, request, gpus, lead.token)
        else:
            self._threads.submit(self._execute, attempts, request, gpus, lead.token)

    def _refuse(self, tasks: list[Claimed]) -> None:
        """Tasks the claim refused (over --max-task-bytes, or a large field unreadable):
        failed at once with the claim's reason, never loaded nor run."""
        ended = []
        for task in tasks:
            log.warning("task %d failed without running: %s", task.task_id, task.refused)
            if self.metrics is not None:
                self.metrics.task_started(task.fields)
            ended.append(
                (
                    Attempt(task),
                    self._unrun(task.task_id, task.fields, task.refused_code or Result.UNKNOWN, task.refused or ""),
                )
            )
        self._finish(ended)

    def _unrun(self, task_id: int, fields: dict[bytes, bytes], code: int, message: str) -> dict[str, Any]:
        """The result of a task that fails without running: its code and why."""
        return result_fields(
            task_id,
            Outcome(Result(code), error=message),
            {},
            0.0,
            self.options.max_result_bytes,
            self.signer,
            named_host(fields),
        )

    def _execute(self, attempts: list[Attempt], request: Request, gpus: list[GPU], slot_key: str) -> None:
        """Run a group, then the groups prefetched for this slot, holding its resources."""
        slot = Slot(
            request,
            gpus,
            self.workdir,
            self.pool,
            self._function,
            self.options.max_result_bytes,
            self.signer,
            self.files,
        )
        try:
            while True:
                self._run_group(attempts, slot)
                with self._lock:
                    upcoming = self._prefetched
                    if upcoming is not None and upcoming[1] == request:
                        self._prefetched = None
                    else:
                        upcoming = None
                        del self._busy[slot_key]
                if upcoming is None:
                    return
                attempts = upcoming[0]
        finally:
            self.allocator.release(slot_key)
            self._changed.set()
            if self._blocked:
                try:
                    self.store.ring_worker(self.name)
                except redis.RedisError:
                    pass  # the main loop's wait is bounded by block_seconds anyway

    def _run_group(self, attempts: list[Attempt], slot: Slot) -> None:
        """Run a group in order: quick PythonTasks in batches, the others one by one.  What
        goes wrong with one task (or one batch) fails it alone: the others of the group run."""
        index = 0
        try:
            attempts = self._screened(attempts)
            specs = [quick_spec(a.fields) for a in attempts]
        except Exception as exc:  # a bug of ours must not lose the tasks: report them failed
            self._crashed(attempts, exc)
            return
        while index < len(attempts):
            end = index
            while end < len(attempts) and specs[end] is not None:
                end += 1
            chunk = attempts[index : max(end, index + 1)]
            try:
                if end > index:
                    self._run_batch(chunk, specs[index:end], slot)  # type: ignore[arg-type]
                else:
                    self._run_one(chunk[0], slot)
            except Exception as exc:  # a bug of ours must not lose the tasks: report them failed
                self._crashed(chunk, exc)
            index += len(chunk)

    def _crashed(self, attempts: list[Attempt], exc: Exception) -> None:
        log.exception("tasks %s crashed the runner", [a.task_id for a in attempts])
        self._finish(
            [
                (a, self._unrun(a.task_id, a.fields, Result.UNKNOWN, f"worker error: {exc!r}"))
                for a in attempts
                if a.token in self._running
            ]
        )

    def _screened(self, attempts: list[Attempt]) -> list[Attempt]:
        """The attempts the runner may read; the others end at once, failed with what is
        wrong, before anything of them is unpickled, and only they.  The one check for
        every path a claimed task takes (a batch, one by one, a pack's members), which
        therefore check nothing themselves (see ``_unreadable``)."""
        screened: list[Attempt] = []
        ended: list[tuple[Attempt, dict[str, Any] | None]] = []
        for attempt in attempts:
            problem = None
            if self.signer is not None or packing.MEMBERS in attempt.fields:
                problem = self._unreadable(attempt)
            if problem is None:
                screened.append(attempt)
            else:
                log.warning("task %d failed without running: %s", attempt.task_id, problem)
                ended.append((attempt, self._unrun(attempt.task_id, attempt.fields, Result.UNKNOWN, problem)))
        if ended:
            self._finish(ended)
        return screened

    def _unreadable(self, attempt: Attempt) -> str | None:
        """What keeps the runner from reading a claimed hash, or None.  With a secret: a
        hash that does not verify as a whole (a pack's members and their arguments
        included, large fields as they were read).  A pack's members are read here, once
        (``Attempt.members``): members that do not load are another client's garbage."""
        if self.signer is not None:
            try:
                self.signer.verify_task(attempt.task_id, attempt.fields)
            except SignatureError as exc:
                return f"refused: {exc}"
        if packing.MEMBERS in attempt.fields:
            try:
                attempt.members = packing.claimed_members(attempt.fields)
            except ValueError as exc:
                return f"unreadable task hash {self.store.keys.task(attempt.task_id)}: {exc}"
        return None

    def _run_one(self, attempt: Attempt, slot: Slot) -> None:
        if attempt.cancelled:
            self._finish([(attempt, None)])
            return
        if packing.MEMBERS in attempt.fields:
            self._run_pack_one_by_one(attempt, slot)
            return
        started = time.monotonic()
        fields = self._task_run(attempt, attempt.task_id, attempt.fields, slot)
        self._pace.record(1, time.monotonic() - started)
        self._finish([(attempt, fields)])

    @staticmethod
    def _task_run(attempt: Attempt, task_id: int, fields: dict[bytes, bytes], slot: Slot) -> dict[str, Any] | None:
        """One task (or a pack's member) on the per-task path, stopped if ``attempt`` is
        cancelled meanwhile: its result fields, or None once cancelled."""
        run = TaskRun(task_id, fields, slot)
        attempt.stop_with(run.cancel)
        try:
            return run.execute()
        finally:
            attempt.stop_with(None)
            run.close()

    def _run_pack_one_by_one(self, attempt: Attempt, slot: Slot) -> None:
        """A pack's members, each on the per-task path (its batch lost its child)."""
        results = []
        started = time.monotonic()
        for member_id, fields in packing.member_fields(attempt.fields, attempt.members):
            result = self._task_run(attempt, member_id, fields, slot)
            if result is None or attempt.cancelled:
                self._finish([(attempt, None)])  # cancelled or lease lost: the pack runs again elsewhere
                return
            results.append((member_id, result))
        self._pace.record(max(len(results), 1), time.monotonic() - started)
        self._finish([(attempt, packing.pack_results(results))])

    def _run_batch(self, attempts: list[Attempt], specs: list[dict[str, Any]], slot: Slot) -> None:
        live = [(a, s) for a, s in zip(attempts, specs) if not a.cancelled]
        if len(live) < len(attempts):
            self._finish([(a, None) for a in attempts if a.cancelled])
        if not live:
            return
        held = [a for a, _ in live]
        calls, owners = calls_of(held)  # a pack's members are calls of their own
        batch = QuickBatch(
            calls, [live[owner][1] for owner in owners], slot, while_running=self._claim_ahead if self._inline else None
        )
        for attempt in held:
            attempt.stop_with(batch.stop)
        started = time.monotonic()
        try:
            result = batch.run()
        finally:
            for attempt in held:
                attempt.stop_with(None)
            batch.close()
        if result.ending is Ending.DONE:
            self._pace.record(len(calls), time.monotonic() - started)
            self._finish(list(zip(held, attempt_results(held, calls, owners, result.fields))))
        elif result.ending is Ending.RUN_ONE_BY_ONE:
            log.warning("a batch of %d tasks lost its Python process; running them one by one", len(calls))
            for attempt in held:
                self._run_one(attempt, slot)
        else:
            self._hand_back(held)

    def _hand_back(self, attempts: list[Attempt]) -> None:
        """A batch was stopped for a cancel: its other tasks go back to the queue, their
        attempt not counted (they did not fail), and run again soon."""
        back = {a.task_id: a.token for a in attempts if not a.cancelled}
        self._finish([(a, None) for a in attempts])
        if not back:
            return
        try:
            self._give_back(back)
        except redis.RedisError as exc:
            log.warning("could not hand %d task(s) back (%s); their leases will expire", len(back), exc)

    def _give_back(self, held: dict[int, str]) -> None:
        """Hand tasks back to their queues now, their attempts not counted (release, then
        a reap that requeues them at once instead of at the next reaper round)."""
        self.store.release(held)
        self.store.reap(lock_ms=0, worker_timeout_ms=self.lease_ms * 2, force=True)

    def _finish(self, ended: list[tuple[Attempt, dict[str, Any] | None]]) -> None:
        """Attempts that ended: results of the ones still wanted go to the outbox."""
        if self.metrics is not None:
            for attempt, fields in ended:
                if fields is not None and not attempt.cancelled and "pr" in fields:
                    for _, member in fields["pr"]:  # a pack's results: one per member
                        self.metrics.task_finished(member)
                else:
                    self.metrics.task_finished(None if attempt.cancelled else fields)
        with self._lock:
            for attempt, fields in ended:
                self._running.pop(attempt.token, None)
                if fields is not None and not attempt.cancelled:
                    self._outbox.append((attempt.task_id, attempt.token, fields))
        self._changed.set()

    def _function(self, digest: str) -> bytes | None:
        """A function body by digest, from a small LRU cache of this worker, else Redis."""
        body = self._functions.get(digest)
        if body is not None:
            self._functions.move_to_end(digest)
        else:
            body = self.store.function(digest, self.options.max_task_bytes)  # TaskTooLarge fails its tasks
            if body is not None:
                verify_function_body(digest, body)
                self._functions[digest] = body
                while len(self._functions) > 128:
                    self._functions.popitem(last=False)
        return body

    def _take_outbox(self) -> list[tuple[int, str, dict[str, Any]]]:
        with self._lock:
            batch, self._outbox = self._outbox, []
        return batch

    def _hold(self, batch: list[tuple[int, str, dict[str, Any]]]) -> None:
        """Keep undelivered results (Redis away, or a key they are written to broken) for
        the next try; leases stay renewed."""
        if batch:
            log.debug("cannot deliver %d result(s) now; holding them", len(batch))
            with self._lock:
                self._outbox[:0] = batch

    def _deliver(self) -> None:
        """Send finished results; on a Redis outage keep them and try again later."""
        batch = self._take_outbox()
        if not batch:
            return
        try:
            accepted = self.store.complete(batch, on_broken=self._report_broken)
        except redis.RedisError as exc:
            self.outage.failed("delivery", exc)
            self._hold(batch)
            time.sleep(0.5)
            return
        self.outage.succeeded()
        self._delivered(batch, accepted)

    def _delivered(self, batch: list[tuple[int, str, dict[str, Any]]], accepted: list[Delivery]) -> None:
        """Count what Redis recorded; hold what it could not record now (a key it writes
        holds the wrong type, reported by the store: see complete.lua) for the next try."""
        self.tasks_done += sum(1 for ok in accepted if ok)
        held = []
        for result, ok in zip(batch, accepted):
            if ok is Delivery.RETRY:
                held.append(result)
            elif not ok:
                log.warning("result of task %d dropped: %s", result[0], ok.reason)
        self._hold(held)

    # -- heartbeat, leases, reaper -----------------------------------------------------
    def _status(self) -> str:
        return json.dumps(
            {
                "running": len(self._running),
                "in_use": self.allocator.in_use(),
                "done": self.tasks_done,
                "draining": self._draining,
            }
        )

    def _heartbeat_loop(self) -> None:
        interval = min(self.options.lease_seconds / 3, HEARTBEAT_MAX_SECONDS)
        beats = 0
        while not self._stopping.wait(interval):
            if self._abort:
                self._stop_and_hand_back()
                continue
            beats += 1
            try:
                self._heartbeat()
                self._last_beat = time.monotonic()
                self.outage.succeeded()
                if beats % max(1, int(self.options.lease_seconds / 2 / interval)) == 0:
                    self.store.reap(lock_ms=int(self.lease_ms / 2), worker_timeout_ms=self.lease_ms * 2)
            except redis.RedisError as exc:
                self.outage.failed("heartbeat", exc)
            except Exception:  # the heartbeat thread must never die: leases depend on it
                log.exception("heartbeat error; retrying")

    def _heartbeat(self) -> None:
        with self._lock:
            # finished results waiting for delivery (Redis was away) keep their leases too
            held = {task_id: token for task_id, token, _ in self._outbox}
            held.update({attempt.task_id: token for token, attempt in self._running.items()})
        lost, registered = self.store.renew(self.name, self._status(), held, self.lease_ms, self._report_broken)
        if not registered:
            log.warning("this worker had been given up for dead; registering again")
            self._register()
        for task_id in lost:
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

    def _health(self) -> tuple[bool, str]:
        """For ``/healthz``: healthy while heartbeats (and so lease renewals) reach Redis."""
        silent = time.monotonic() - self._last_beat
        if silent > self.options.lease_seconds:
            return False, f"no heartbeat reached Redis for {silent:.0f} s"
        return True, "draining" if self._draining else "ok"

    def _register(self) -> None:
        record = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            "resources": json.dumps(self.capacity.as_dict()),
            "tags": ",".join(self.options.tags),
            "gpus": json.dumps([{"index": g.index, "uuid": g.uuid, "model": g.model} for g in self.capacity.gpus]),
            "started": time.time(),
            "status": self._status(),
        }
        if self.metrics_address:
            record["metrics"] = self.metrics_address  # found by `wq-redis exporter`'s service discovery
        self.store.register_worker(self.name, record)
        self.store.renew(self.name, self._status(), {}, self.lease_ms)  # listed as live at once

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

    def _shutdown(self) -> None:
        if self._abort:
            self._stopping.set()  # no more renewals: the leases are being handed back
            self._stop_and_hand_back()
        deadline = time.monotonic() + 30
        while self._outbox and time.monotonic() < deadline:
            self._deliver()
            if self._outbox:  # held: Redis away, or a key complete.lua writes is broken
                time.sleep(0.5)
        self._stopping.set()  # else a last heartbeat could find the record gone and register again
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
