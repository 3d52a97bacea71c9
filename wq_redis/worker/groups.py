"""A claimed group's life on its slot: started, screened, run, finished.

A claim brings groups: a task and the followers claimed with it when tasks are short
(``groups``).  A group runs in order on its lead's resources (a slot): quick PythonTasks
as one batch in a warm child (worker/batch.py), the others one by one (``TaskRun``), a
pack's members as calls of their own.  A slot whose tasks are short may have the next
group claimed for it ahead (``Worker._prefetch``); it runs that group before it frees its
resources.  Whatever ends an attempt (a result, a failure before running, a cancel) goes
through ``_finish``: a result still wanted waits in the outbox for delivery.

``Groups`` is a part of ``Worker`` (worker/loop.py), which holds the state it reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

import redis

from ..protocol import packing
from ..protocol.codes import Result
from ..protocol.fields import ALLOCATED_B, PACK_RESULTS, RESULT
from ..protocol.resources import RESOURCE_NAMES, Request, given, parse_resource_class, split_member
from ..protocol.signing import Signer
from ..protocol.store import Claimed, QueueStore
from .batch import Attempt, Ending, QuickBatch, attempt_results, calls_of
from .cache import FileCache, FunctionBodies
from .child.quick import Pace, quick_spec
from .child.results import Outcome, named_host, result_fields
from .outbox import Outbox
from .pool import WarmPool
from .resources import GPU, Allocator
from .runner import Slot, TaskRun
from .screening import Screening

if TYPE_CHECKING:
    from .loop import WorkerOptions
    from .metrics import WorkerMetrics  # loaded only with --metrics-port (loop.py)

log = logging.getLogger("wq_redis.worker")


_EXHAUSTED = {  # result code -> the index of the resource the task ran out of
    int(Result.RESOURCE_EXHAUSTION): RESOURCE_NAMES.index("memory"),
    int(Result.DISK_ALLOC_FULL): RESOURCE_NAMES.index("disk"),
}


def groups(claimed: list[Claimed]) -> list[list[Claimed]]:
    """Claimed tasks grouped by slot: each task with the followers claimed after it."""
    grouped: list[list[Claimed]] = []
    for task in claimed:
        if task.follows and grouped:
            grouped[-1].append(task)
        else:
            grouped.append([task])
    return grouped


def retried_at_max(member: str, fields: dict[str, Any]) -> bool:
    """Whether a task that ran out of memory or disk is retried at its category's maximum
    instead of failing, as Work Queue's category_next_label decides: only in an automatic
    category, only from its first allocation, and only when the task did not declare the
    resource it ran out of itself (then a larger allocation is not the task's to get)."""
    index = _EXHAUSTED.get(int(fields.get(RESULT, -1)))
    if index is None:
        return False
    try:
        declared = parse_resource_class(split_member(member)[0])
    except ValueError:
        return False
    return bool(declared.category) and not declared.at_max and declared.declared[index] < 0


def left_more(claimed: list[Claimed], followers: int) -> bool:
    """Whether a claim probably left more behind: it got every follower it asked for
    (worth prefetching); one that got fewer drained its queue (no claim is wasted on it)."""
    return bool(claimed) and sum(packing.live_count(c.fields) for c in claimed) > followers


class Groups:
    """Starts claimed groups on their slots and runs them; ends their attempts."""

    # the worker's state this part reads (set by Worker.__init__)
    options: WorkerOptions
    store: QueueStore
    name: str
    workdir: str
    pool: WarmPool
    allocator: Allocator
    metrics: WorkerMetrics | None
    outbox: Outbox
    functions: FunctionBodies
    files: FileCache
    signer: Signer | None
    screening: Screening
    _threads: ThreadPoolExecutor
    _inline: bool  # one slot: groups run in the main thread
    _pace: Pace
    _lock: threading.Lock
    _changed: threading.Event
    _running: dict[str, Attempt]  # by lease token, from claim to result
    _busy: dict[str, Request]  # slot (its first task's token) -> what it holds
    _prefetched: tuple[list[Attempt], Request] | None  # what a busy slot runs next
    _blocked: bool
    _abort: bool
    # the worker's other parts this one calls
    _claim_ahead: Callable[[], None]
    _give_back: Callable[[dict[int, str]], None]

    def _start(self, group: list[Claimed], after: Request | None = None) -> None:
        """Start a task and its followers: they run one after another on its resources.

        ``after``: a prefetched group, left for the next slot holding ``after`` that is
        done (when none holds it any more, it starts now)."""
        self._last_work = time.monotonic()
        refused = [task for task in group if task.refused]
        if refused:
            self._refuse(refused)
            group = [task for task in group if not task.refused]
            if not group:
                return
        lead = group[0]
        request = given(lead.member, lead.fields.get(ALLOCATED_B))
        attempts = [Attempt(task) for task in group]
        ids = {a.task_id for a in attempts}
        with self._lock:
            # Our own earlier attempt of a task lost its lease (we were stalled) and the
            # task came back to us: that attempt must stop, its result is void.
            for stale in [a for a in self._running.values() if a.task_id in ids]:
                stale.cancel()
            for attempt in attempts:
                self._running[attempt.token] = attempt
            waits = False
            if after is not None and after in self._busy.values():
                # claimed within that slot's resources: it runs there, whatever its class
                self._prefetched = (attempts, after)  # the slot's runner takes it when done
                waits = True
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
        ended: list[tuple[Attempt, dict[str, Any] | None]] = []
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
        slot = self._slot(request, gpus)
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

    def _slot(self, request: Request, gpus: list[GPU]) -> Slot:
        """What a runner needs to run tasks on ``request``'s resources (``gpus`` among them)."""
        return Slot(
            request,
            gpus,
            self.workdir,
            self.pool,
            self.functions.get,
            self.options.max_result_bytes,
            self.signer,
            self.files,
        )

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
        # a batch is a run of specs none of which is None (the scan below): one cast per group
        batch_specs = cast("list[dict[str, Any]]", specs)
        while index < len(attempts):
            end = index
            while end < len(attempts) and specs[end] is not None:
                end += 1
            chunk = attempts[index : max(end, index + 1)]
            try:
                if end > index:
                    self._run_batch(chunk, batch_specs[index:end], slot)
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
        wrong, before anything of them is unpickled, and only they (see worker/screening.py)."""
        screened, refused = self.screening.split(attempts)
        if refused:
            ended: list[tuple[Attempt, dict[str, Any] | None]] = []
            for attempt, problem in refused:
                log.warning("task %d failed without running: %s", attempt.task_id, problem)
                ended.append((attempt, self._unrun(attempt.task_id, attempt.fields, Result.UNKNOWN, problem)))
            self._finish(ended)
        return screened

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
        if fields is not None and not attempt.cancelled and retried_at_max(attempt.member, fields):
            try:
                if self.store.escalate(attempt.task_id, attempt.token):
                    log.info("task %d ran out of its first allocation; it waits again at its maximum", attempt.task_id)
                    self._finish([(attempt, None)])
                    return
            except redis.RedisError as exc:  # its result is recorded instead: nothing is lost
                log.warning("could not retry task %d at its maximum (%s)", attempt.task_id, exc)
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

    def _finish(self, ended: list[tuple[Attempt, dict[str, Any] | None]]) -> None:
        """Attempts that ended: results of the ones still wanted go to the outbox."""
        if self.metrics is not None:
            for attempt, fields in ended:
                if fields is not None and not attempt.cancelled and PACK_RESULTS in fields:
                    for _, member in fields[PACK_RESULTS]:  # a pack's results: one per member
                        self.metrics.task_finished(member)
                else:
                    self.metrics.task_finished(None if attempt.cancelled else fields)
        with self._lock:
            for attempt, fields in ended:
                self._running.pop(attempt.token, None)
                if fields is not None and not attempt.cancelled:
                    self.outbox.results.append((attempt.task_id, attempt.token, fields))
        self._changed.set()
