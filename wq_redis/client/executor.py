"""``wq_redis.Executor``: the queue as a ``concurrent.futures.Executor``, and asyncio.

>>> import concurrent.futures, wq_redis as wq
>>> with wq.Executor("demo", local_workers=2) as pool:
...     futures = [pool.submit(pow, 2, i, resources={"cores": 1}) for i in range(10)]
...     for future in concurrent.futures.as_completed(futures):
...         print(future.result())

One background thread per executor collects finished tasks and resolves their futures;
it is the only one that waits, and every use of the underlying ``WorkQueue`` goes through
one lock, so ``submit`` may be called from any thread.  Futures are awaitable
(``await pool.submit(f, x)``), and ``loop.run_in_executor(pool, f, x)`` works as with any
executor.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import Any, cast

from ..protocol.resources import RESOURCE_NAMES
from .errors import task_exception
from .mapping import SUBMIT_BATCH
from .queue import WorkQueue
from .seam import QueueSeam
from .task import PythonTask, Task

POLL_SECONDS = 0.5  # longest a blocked wait lasts before the collector looks around again


class TaskFuture(concurrent.futures.Future):
    """A future of one task: ``result()`` is the function's return value; it raises the
    function's exception (remote traceback chained) or ``TaskFailed``.  Awaitable."""

    def __init__(self) -> None:
        super().__init__()
        self.task_id: int | None = None
        self.task: Task | None = None  # the finished task (std_output, resources_measured, ...)

    def __await__(self) -> Generator[Any, None, Any]:
        import asyncio  # here, not at the top: workers import this package and need no event loop

        return asyncio.wrap_future(self).__await__()


def _configure(task: Task, template: Task | None, resources: Mapping[str, int] | None) -> Task:
    if template is not None:
        task._spec = copy.deepcopy(template._spec)
    for name, value in (resources or {}).items():
        if name not in RESOURCE_NAMES:
            raise ValueError(f"unknown resource {name!r}; use {RESOURCE_NAMES} (or a task template)")
        getattr(task, f"specify_{name}")(value)
    return task


class _StarChunk:
    """Runs ``func(*args)`` for each argument tuple of a chunk (``Executor.map(chunksize=)``)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __call__(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        return [self.func(*args) for args in calls]


class Executor(concurrent.futures.Executor):
    """Run Python calls as tasks of a queue: ``Executor(queue="default", redis_url=None)``.

    ``queue`` is a queue name (the executor opens, and at shutdown closes, its own
    ``WorkQueue``; extra keyword arguments such as ``local_workers=2`` go to it) or a
    ``WorkQueue`` the executor then uses alone.  ``resources={"cores": 2, ...}`` and
    ``template=Task`` (whose tag, category, priority, retries, limits, environment and
    input files are copied) apply to every call, and per call as keyword arguments of
    ``submit`` and ``map``; those two names are therefore reserved there (pass a function
    argument of that name with ``functools.partial``).  A call that declares no resources
    there takes one core (a Work Queue task that declares none takes a whole worker).
    """

    queue_type: type[WorkQueue] = WorkQueue  # what a queue name opens (wq.Executor: embedded/queue.py's)

    def __init__(
        self,
        queue: str | WorkQueue = "default",
        redis_url: str | None = None,
        *,
        resources: Mapping[str, int] | None = None,
        template: Task | None = None,
        **queue_options: Any,
    ) -> None:
        if isinstance(queue, WorkQueue):
            self.queue, self._owns_queue = queue, False
        else:
            self.queue, self._owns_queue = self.queue_type(queue, redis_url, **queue_options), True
        self._seam = QueueSeam(self.queue)  # the queue steps the collector takes (seam.py)
        self.resources = dict(resources or {})
        self.template = template
        self._lock = threading.RLock()
        self._futures: dict[int, TaskFuture] = {}
        self._to_cancel: collections.deque[int] = collections.deque()  # appended from any thread
        self._work = threading.Event()  # new futures or cancels for the collector
        self._closing = False
        self._collector = threading.Thread(target=self._collect, name="wq-redis-executor", daemon=True)
        self._collector.start()

    # -- submitting ----------------------------------------------------------------------
    # resources= and template= are this submit's own keywords (reserved, see the class doc): a
    # narrower signature than Executor.submit's, which passes every keyword to fn
    def submit(  # type: ignore[override]  # resources=, template= are Work Queue's, not fn's
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        resources: Mapping[str, int] | None = None,
        template: Task | None = None,
        **kwargs: Any,
    ) -> TaskFuture:
        """``fn(*args, **kwargs)`` as a task; ``resources``/``template`` for this call only."""
        return self._submit_tasks([self._task(fn, args, kwargs, resources, template)])[0]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        resources: Mapping[str, int] | None = None,
        template: Task | None = None,
    ) -> Iterator[Any]:
        """Like ``concurrent.futures.Executor.map``: every call is submitted at once (in
        batches of one round trip), results are yielded in order; ``chunksize`` calls per task."""
        if chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = list(zip(*iterables))
        if chunksize == 1:
            tasks = [self._task(fn, args, {}, resources, template) for args in calls]
        else:
            runner = _StarChunk(fn)
            tasks = [
                self._task(runner, (calls[i : i + chunksize],), {}, resources, template)
                for i in range(0, len(calls), chunksize)
            ]
        futures = self._submit_tasks(tasks)

        def results() -> Iterator[Any]:
            try:
                futures.reverse()
                while futures:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    value = futures.pop().result(remaining)
                    yield from (value if chunksize > 1 else [value])
            finally:
                for future in futures:
                    future.cancel()

        return results()

    def _task(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        resources: Mapping[str, int] | None,
        template: Task | None,
    ) -> Task:
        task = PythonTask(fn, *args, **kwargs)
        if template is None:  # a template of this call replaces the executor's settings whole
            _configure(task, self.template, self.resources)
        _configure(task, template, resources)
        spec = task._spec
        if spec.cores is None and spec.memory is None and spec.disk is None and spec.gpus is None:
            task.specify_cores(1)  # a pool of calls: one core each, not Work Queue's whole worker
        return task

    def _submit_tasks(self, tasks: list[Task]) -> list[TaskFuture]:
        futures = []
        with self._lock:
            if self._closing:
                raise RuntimeError("cannot submit to an executor that is shut down")
            for start in range(0, len(tasks), SUBMIT_BATCH):
                ids = self.queue.submit_many(tasks[start : start + SUBMIT_BATCH])
                for task_id in ids:
                    future = TaskFuture()
                    future.task_id = task_id
                    self._futures[task_id] = future
                    futures.append(future)
        for future in futures:
            future.add_done_callback(self._on_done)
        self._work.set()
        return futures

    def _on_done(self, future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled():  # cancelled by the caller: cancel its task too
            future.set_running_or_notify_cancel()  # wait() and as_completed() count it done only now
            task_id = cast(TaskFuture, future).task_id  # only TaskFutures get this callback
            if task_id is not None:  # (always: _submit_tasks sets it before adding the callback)
                self._to_cancel.append(task_id)
            self._work.set()

    # -- collecting ----------------------------------------------------------------------
    def _collect(self) -> None:
        while True:
            with self._lock:
                self._cancel_requested()
                finished = self._take_finished()
                idle = not self._futures
                closing = self._closing
            for future, task in finished:
                _resolve(future, task)
            if idle and closing:
                break
            if finished:
                continue
            if idle:
                self._work.wait(POLL_SECONDS)
                self._work.clear()
            else:
                try:
                    self._seam.wait_for_completion(POLL_SECONDS)
                except Exception:  # Redis away: the client reconnects; look again shortly
                    time.sleep(POLL_SECONDS)
        if self._owns_queue:
            self.queue.close()

    def _cancel_requested(self) -> None:
        ids = []
        while self._to_cancel:
            task_id = self._to_cancel.popleft()
            if self._futures.pop(task_id, None) is not None:
                ids.append(task_id)
        if ids:
            self._seam.cancel(ids)

    def _take_finished(self) -> list[tuple[TaskFuture, Task]]:
        try:
            self._seam.retrieve()
        except Exception:
            return []
        mine = self._seam.finished_among(self._futures)
        taken = [(self._futures.pop(i), self._seam.take_result(i)) for i in mine]
        return cast("list[tuple[TaskFuture, Task]]", taken)  # each id is held (finished_among): none is None

    # -- shutting down -------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; with ``cancel_futures`` cancel what has not finished; with
        ``wait`` return once every future is resolved (and an owned queue closed)."""
        with self._lock:
            self._closing = True
            futures = list(self._futures.values())
        if cancel_futures:
            for future in futures:
                future.cancel()
        self._work.set()
        if wait:
            concurrent.futures.wait(futures)
            if threading.current_thread() is not self._collector:
                self._collector.join()


def _resolve(future: TaskFuture, task: Task) -> None:
    future.task = task
    error = task_exception(task)
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(task.output)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled meanwhile
