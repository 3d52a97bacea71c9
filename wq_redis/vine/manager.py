"""TaskVine's ``Manager`` over the engine's queue (embedded/queue.py's ``WorkQueue``).

The manager is the queue: ``submit`` / ``wait`` / ``empty`` / ``cancel_*`` / ``stats`` are
the queue's calls under TaskVine's names and return values.  What TaskVine does that
the engine does not, it does here, on the manager side only: it keeps the table of its
tasks (``wait`` hands back the same ``vine.Task`` that was submitted), returns cancelled
tasks through ``wait`` with result ``"cancelled"``, counts ``hungry()`` as TaskVine does,
and stages output buffers in a private directory.
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..client.task import PythonTask as EnginePythonTask
from ..client.task import Task as EngineTask
from ..embedded.queue import WorkQueue
from ..protocol.resources import parse_class, split_member
from .codes import VINE_BUFFER, VINE_DEFAULT_PORT, VINE_FILE, VINE_TASK_RETRIEVED, VINE_URL, state_from_engine
from .files import File, cache_level
from .stats import VineStats, hungry_count, vine_stats
from .task import _SERVERLESS, PythonTask, Task

HUNGRY_MINIMUM, HUNGRY_MINIMUM_FACTOR = 10, 2  # TaskVine's defaults (tune "hungry-minimum", "hungry-minimum-factor")
HUNGRY_SAMPLE = 100  # waiting tasks whose requests hungry() averages (TaskVine's attempt_schedule_depth)


def _timeout(timeout: Any) -> float:
    return -1 if timeout == "wait_forever" else float(timeout)


def _ignored(name: str, why: str) -> Callable[..., None]:
    def method(self: Any, *args: Any, **kwargs: Any) -> None:
        warnings.warn(f"{name}() has no effect in wq-redis: {why}", stacklevel=2)

    method.__name__ = name
    method.__doc__ = f"Accepted for TaskVine compatibility; no effect ({why})."
    return method


def _serverless(name: str) -> Callable[..., None]:
    def method(self: Any, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{name}(): {_SERVERLESS}")

    method.__name__ = name
    return method


class Manager:
    """TaskVine's manager: ``vine.Manager(port=9123, name=None, ...)``.

    ``port`` (a number, or a range) is accepted and ignored: workers find the manager's
    queue, ``name`` (default ``"default"``), through Redis; start them with
    ``wq-redis worker --queue NAME``.  ``redis_url`` and the other keywords of
    ``wq_redis.WorkQueue`` (``local_workers=N``, ``secret=``...) choose the Redis and the
    engine's options; with no URL (argument, ``WQ_REDIS_URL`` or ``REDIS_URL``) an
    embedded Redis starts, as for ``wq.WorkQueue``.

    >>> import wq_redis.vine as vine
    >>> m = vine.Manager(name="demo", local_workers=2)
    >>> t = vine.Task("echo hi"); t.set_cores(1); m.submit(t)
    >>> while not m.empty():
    ...     t = m.wait(5)
    ...     if t: print(t.id, t.result, t.std_output)
    """

    def __init__(
        self,
        port: int | Iterable[int] = VINE_DEFAULT_PORT,
        name: str | None = None,
        shutdown: bool = False,
        run_info_path: str | None = "vine-run-info",
        run_info_template: str | None = None,
        staging_path: str | None = None,
        ssl: Any = None,
        init_fn: Callable[[Manager], None] | None = None,
        status_display_interval: int | None = None,
        prometheus_port: int | None = None,
        *,
        redis_url: str | None = None,
        **queue_options: Any,
    ) -> None:
        if ssl and ssl != (None, None):
            warnings.warn("ssl= is ignored: reach Redis over TLS with a rediss:// URL", stacklevel=2)
        if prometheus_port is not None:
            warnings.warn("prometheus_port= is ignored: run `wq-redis exporter` for Prometheus", stacklevel=2)
        self._queue = WorkQueue(name or "default", redis_url=redis_url, **queue_options)
        self._shutdown = bool(shutdown)
        self._task_table: dict[int, Task] = {}  # submitted, not yet handed back by wait
        self._back: collections.deque[Task] = collections.deque()  # cancelled (or finished) for wait to return
        self._staging_parent = staging_path
        self._staging: str | None = None
        self.hungry_minimum = HUNGRY_MINIMUM
        self.hungry_minimum_factor = HUNGRY_MINIMUM_FACTOR
        if init_fn is not None:
            init_fn(self)

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the queue (see ``WorkQueue.close``); with ``shutdown=True``, first ask the
        workers to exit."""
        if self._shutdown:
            self._shutdown = False
            self.workers_shutdown(0)
        self._queue.close()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    @property
    def name(self) -> str:
        return self._queue.name

    @property
    def port(self) -> int:
        """0: there is no manager port (workers reach Redis)."""
        return self._queue.port

    @property
    def using_ssl(self) -> bool:
        return self._queue.using_ssl

    @property
    def redis_url(self) -> str:
        return self._queue.redis_url

    @property
    def staging_directory(self) -> str:
        """Where output buffers land before their contents are read (removed at ``close``)."""
        if self._staging is None:
            if self._staging_parent:
                os.makedirs(self._staging_parent, exist_ok=True)
            self._staging = tempfile.mkdtemp(prefix="vine-staging-", dir=self._staging_parent)
        return self._staging

    def _stage_path(self) -> str:
        return os.path.join(self.staging_directory, uuid.uuid4().hex)

    # -- tasks ------------------------------------------------------------------------------
    def submit(self, task: Task) -> int:
        """Queue ``task``; returns its id.  A task returned by ``wait`` may be submitted again."""
        if not isinstance(task, Task):
            raise TypeError(f"submit() takes a vine.Task or vine.PythonTask, got {type(task).__name__}")
        task._finalize(self)
        task_id = self._queue.submit(task._task)
        self._task_table[task_id] = task
        return task_id

    def wait(self, timeout: Any = "wait_forever") -> Task | None:
        """The next finished (or cancelled) task, or None after ``timeout`` seconds
        (``"wait_forever"``, the default, or -1: no limit; 0: only one ready now)."""
        return self.wait_for_tag(None, timeout)

    def wait_for_tag(self, tag: str | None, timeout: Any = "wait_forever") -> Task | None:
        back = self._take_back(lambda t: tag is None or t.tag == tag)
        if back is not None:
            return back
        seconds = _timeout(timeout)
        found = self._queue.wait(seconds) if tag is None else self._queue.wait_for_tag(tag, seconds)
        return self._returned(found)

    def wait_for_task_id(self, task_id: int, timeout: Any = "wait_forever") -> Task | None:
        back = self._take_back(lambda t: t.id == task_id)
        if back is not None:
            return back
        return self._returned(self._queue.wait_for_task_id(task_id, _timeout(timeout)))

    def _take_back(self, wanted: Callable[[Task], bool]) -> Task | None:
        for task in self._back:
            if wanted(task):
                self._back.remove(task)
                task._collect()
                return task
        return None

    def _returned(self, engine: EngineTask | None) -> Task | None:
        if engine is None:
            return None
        task = self._task_table.pop(engine.id, None) if engine.id is not None else None
        if task is None:  # a task of an earlier manager of this queue, adopted by the engine
            task = _wrap(engine)
        task._collect()
        return task

    def empty(self) -> bool:
        """True when every task submitted has been returned by ``wait``."""
        return not self._back and self._queue.empty()

    def hungry(self) -> int:
        """How many more tasks the workers could take now (TaskVine's count); 0 when sated."""
        stats = self._queue.stats
        requests: list[tuple[int, int, int, int]] = []
        for member, count in stats.waiting_by_queue.items():
            r = parse_class(split_member(member)[0])
            requests.extend([(r.cores, r.memory, r.disk, r.gpus)] * min(count, HUNGRY_SAMPLE - len(requests)))
        return hungry_count(stats, requests, self.hungry_minimum, self.hungry_minimum_factor)

    def task_state(self, task_id: int) -> int:
        """A ``VINE_TASK_*`` state."""
        if any(t.id == task_id for t in self._back):
            return VINE_TASK_RETRIEVED
        return state_from_engine(self._queue.task_state(task_id))

    # -- cancelling: the tasks come back through wait, as TaskVine's do --------------------
    def cancel_by_task_id(self, id: int) -> int:
        """Cancel a waiting or running task; 1 if it was, 0 if not found or already finished
        (a finished one is still returned by ``wait``, with its result)."""
        return self._hand_back(filter(None, [self._queue.cancel_by_taskid(id)]))

    def cancel_by_task_tag(self, tag: str) -> int:
        """Cancel one task with ``tag``; 1 if one was."""
        for task_id, task in self._task_table.items():
            if task.tag == tag:
                return self.cancel_by_task_id(task_id)
        return 0

    def cancel_all_by_tag(self, tag: str) -> int:
        """Cancel every task with ``tag``; how many were."""
        return self._hand_back(self._queue.cancel_by_tasktag(tag))

    def cancel_by_category(self, category: str) -> int:
        return self._hand_back(self._queue.cancel_by_category(category))

    def cancel_all(self) -> int:
        """Cancel every task of this manager; how many were."""
        return sum(self.cancel_by_task_id(task_id) for task_id in list(self._task_table))

    def _hand_back(self, engine_tasks: Iterable[EngineTask]) -> int:
        cancelled = 0
        for engine in engine_tasks:
            task = self._task_table.pop(engine.id, None) if engine.id is not None else None
            task = task or _wrap(engine)
            task._cancelled = engine.result is None  # one that had finished keeps its result
            cancelled += task._cancelled
            self._back.append(task)
        return cancelled

    # -- files ---------------------------------------------------------------------------------
    def declare_file(
        self, path: str, cache: Any = False, peer_transfer: bool = True, unlink_when_done: bool = False
    ) -> File:
        """A local file or directory, as a task's input or output.  ``cache`` (True,
        ``"workflow"``, ``"worker"``, ``"forever"``) keeps an input in the workers' caches."""
        if unlink_when_done:
            raise NotImplementedError("unlink_when_done is not available in wq-redis: remove the file yourself")
        return File(VINE_FILE, os.fspath(path), cache_level(cache))

    def declare_buffer(self, buffer: bytes | str | None = None, cache: Any = False, peer_transfer: bool = True) -> File:
        """Data in memory as an input, or (``buffer=None``) an output whose ``contents()``
        are filled when its task comes back."""
        data = buffer.encode() if isinstance(buffer, str) else None if buffer is None else bytes(buffer)
        return File(VINE_BUFFER, None, cache_level(cache), data)

    def declare_url(self, url: str, cache: Any = False, peer_transfer: bool = True) -> File:
        """A file the worker downloads (http, https, file), through the engine's
        ``Task.specify_url``; with ``cache`` it is fetched once per worker."""
        if not isinstance(url, str):
            raise TypeError(f"url {url} is not a str")
        cached = cache_level(cache)
        try:  # the engine's specify_url decides: refused here rather than at add_input
            EngineTask("true").specify_url(url, "probe", cache=cached)
        except NotImplementedError as exc:
            raise NotImplementedError(f"declare_url() needs the engine's Task.specify_url: {exc}") from None
        return File(VINE_URL, url, cached)

    def fetch_file(self, file: File) -> str:
        """The contents of a buffer or local file, as text."""
        return bytes(file.contents()).decode("utf-8", errors="replace")

    undeclare_file = remove_file = prune_file = _ignored("undeclare_file", "files are freed by their cache's expiry")

    def undeclare_function(self, fn: Any) -> None:
        """Nothing to free: a function's body expires from Redis when unused."""

    def _unavailable(self, what: str) -> File:
        raise NotImplementedError(f"{what} is not available in wq-redis: produce the file in the task's command")

    def declare_temp(self) -> File:
        return self._unavailable("declare_temp() (files kept only at workers)")

    def declare_untar(self, tarball: File, cache: Any = False, peer_transfer: bool = True) -> File:
        return self._unavailable("declare_untar()")

    def declare_minitask(self, minitask: Task, source: str, cache: Any = False, peer_transfer: bool = True) -> File:
        return self._unavailable("declare_minitask()")

    def declare_poncho(self, package: File, cache: Any = False, peer_transfer: bool = True) -> File:
        return self._unavailable("declare_poncho()")

    def declare_starch(self, starch: File, cache: Any = False, peer_transfer: bool = True) -> File:
        return self._unavailable("declare_starch()")

    def declare_xrootd(self, source: str, *args: Any, **kwargs: Any) -> File:
        return self._unavailable("declare_xrootd()")

    def declare_chirp(self, server: str, source: str, *args: Any, **kwargs: Any) -> File:
        return self._unavailable("declare_chirp()")

    # -- statistics and tuning ---------------------------------------------------------------
    @property
    def stats(self) -> VineStats:
        """A fresh snapshot under TaskVine's field names (one round trip)."""
        return vine_stats(self._queue.stats)

    def stats_category(self, category: str) -> VineStats:
        return vine_stats(self._queue.stats_category(category))

    def status(self, request: str) -> list[dict[str, Any]]:
        """``"manager"``, ``"tasks"``, ``"workers"`` or ``"categories"`` as a list of dicts."""
        return self._queue.status("queue" if request == "manager" else request)

    def summarize_workers(self) -> list[dict[str, int]]:
        return self._queue.workers_summary()

    def tune(self, name: str, value: float) -> None:
        if name == "hungry-minimum":
            self.hungry_minimum = max(1, int(value))
        elif name == "hungry-minimum-factor":
            self.hungry_minimum_factor = max(1, int(value))
        else:
            self._queue.tune(name, value)

    def enable_monitoring(self, watchdog: bool = True, time_series: bool = False) -> int:
        """With ``watchdog``, kill tasks that use more memory or disk than they declared."""
        if watchdog:
            self._queue.enable_monitoring()
        return 1

    def set_resources_max(self, rmd: Mapping[str, int]) -> None:
        self._queue.specify_max_resources(rmd)

    def set_resources_min(self, rmd: Mapping[str, int]) -> None:
        self._queue.specify_min_resources(rmd)

    def set_category_resources_max(self, category: str, rmd: Mapping[str, int]) -> None:
        self._queue.specify_category_max_resources(category, rmd)

    def set_category_resources_min(self, category: str, rmd: Mapping[str, int]) -> None:
        self._queue.specify_category_min_resources(category, rmd)

    def set_category_first_allocation_guess(self, category: str, rmd: Mapping[str, int]) -> None:
        self._queue.specify_category_first_allocation_guess(category, rmd)

    def set_category_mode(self, category: str | None, mode: int) -> None:
        self._queue.specify_category_mode(category, mode)

    def workers_shutdown(self, n: int = 0) -> Any:
        return self._queue.shutdown_workers(n)

    def block_host(self, host: str) -> None:
        self._queue.block_host(host)

    def unblock_host(self, host: str | None = None) -> None:
        self._queue.unblock_host(host)

    def set_name(self, name: str) -> None:
        raise NotImplementedError("a manager's name is its queue's: give it to Manager(name=...)")

    def set_password(self, password: str) -> None:
        self._queue.specify_password(password)

    def set_password_file(self, file: str) -> None:
        self._queue.specify_password_file(file)

    enable_peer_transfers = _ignored("enable_peer_transfers", "workers take their inputs from Redis")
    disable_peer_transfers = _ignored("disable_peer_transfers", "workers take their inputs from Redis")
    set_scheduler = _ignored("set_scheduler", "workers choose the tasks that fit them")
    enable_disconnect_slow_workers = _ignored("enable_disconnect_slow_workers", "slow workers are not disconnected")
    set_keepalive_interval = _ignored("set_keepalive_interval", "workers renew leases in Redis")
    set_keepalive_timeout = _ignored("set_keepalive_timeout", "workers renew leases in Redis")
    set_catalog_servers = _ignored("set_catalog_servers", "workers find the queue through Redis")
    update_catalog = _ignored("update_catalog", "workers find the queue through Redis")

    def application_info(self) -> None:
        return None

    # -- Python helpers ----------------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], seq: Iterable[Any], chunksize: int = 1) -> list[Any]:
        return self._queue.map(fn, seq, chunksize)

    def pair(
        self, fn: Callable[[tuple[Any, Any]], Any], seq1: Iterable[Any], seq2: Iterable[Any], chunksize: int = 1
    ) -> Any:
        """TaskVine's ``pair``: ``fn`` takes one ``(x, y)`` tuple, as TaskVine passes it."""
        return self._queue.pair(fn, seq1, seq2, chunksize)

    def tree_reduce(self, fn: Callable[[list[Any]], Any], seq: Iterable[Any], chunksize: int = 2) -> Any:
        return self._queue.tree_reduce(fn, seq, chunksize)

    # -- serverless: not here ------------------------------------------------------------------
    install_library = _serverless("install_library")
    remove_library = _serverless("remove_library")
    check_library_exists = _serverless("check_library_exists")
    create_library_from_functions = _serverless("create_library_from_functions")
    create_library_from_serverized_files = _serverless("create_library_from_serverized_files")
    create_library_from_command = _serverless("create_library_from_command")
    remote_map = _serverless("remote_map")
    remote_pair = _serverless("remote_pair")
    remote_tree_reduce = _serverless("remote_tree_reduce")


def _wrap(engine: EngineTask) -> Task:
    """A vine task around an engine task this manager did not submit (adopted after a restart)."""
    return (PythonTask if isinstance(engine, EnginePythonTask) else Task)._around(engine)
