"""The rest of Work Queue's API, so a ported program runs unchanged.

Calls that tune Work Queue's own machinery (catalog, keepalives, fast abort, logs, the
manager's TCP connections) have nothing to tune here: they warn once and do nothing.
Calls whose effect wq-redis cannot give raise ``NotImplementedError`` saying what to do
instead, rather than quietly changing what the program computes.
``docs/porting-from-work-queue.md`` lists every call and its twin.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..protocol.resources import RESOURCE_NAMES

if TYPE_CHECKING:
    import redis
    from typing_extensions import Self  # typing.Self is Python 3.11+

    from ..protocol.store import QueueStore
    from .reconnect import Reconnect
    from .spec import TaskSpec
    from .task import Task

_warned: set[str] = set()


def _ignored(name: str, why: str) -> Callable[..., None]:
    def method(self: Any, *args: Any, **kwargs: Any) -> None:
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"{name}() has no effect in wq-redis: {why}", stacklevel=2)

    method.__name__ = name
    method.__doc__ = f"Accepted for Work Queue compatibility; no effect ({why})."
    return method


def _unsupported(name: str, instead: str) -> Callable[..., None]:
    def method(self: Any, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{name}() is not available in wq-redis: {instead}")

    method.__name__ = name
    method.__doc__ = f"Not available in wq-redis: {instead}."
    return method


_MANAGER = "workers connect to Redis, not to the manager"
_CATALOG = "workers find the queue through Redis, not a catalog server"


class WorkQueueCompat:
    """Work Queue manager calls without a job in wq-redis, and a few read-only twins."""

    if TYPE_CHECKING:  # what the methods below use of WorkQueue (as declared in queue_state.py)
        name: str
        redis_url: str
        _client: redis.Redis
        _redis: Reconnect
        _store: QueueStore

        def _send_buffered(self) -> None: ...
        def _wait(self, timeout: float, wanted: Callable[[Task], bool]) -> Task | None: ...
        def enable_monitoring(self, *args: Any, **kwargs: Any) -> None: ...

    # -- twins ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """0: there is no manager port (workers reach Redis)."""
        return 0

    @property
    def using_ssl(self) -> bool:
        """Whether Redis is reached over TLS (a ``rediss://`` URL)."""
        return self.redis_url.startswith("rediss://")

    def status(self, request: str) -> list[dict[str, Any]]:
        """Work Queue's ``status(request)``: ``"queue"``, ``"tasks"``, ``"workers"`` or
        ``"categories"`` of this queue as a list of dicts (what ``wq-redis status --json``
        prints)."""
        from ..protocol.report import gather

        sections = {"queue": None, "tasks": "tasks", "workers": "worker_list", "categories": "categories"}
        if request not in sections:
            raise ValueError(f"request must be one of {sorted(sections)}, got {request!r}")
        self._send_buffered()
        (report,) = gather(
            self._client,
            [self.name],
            workers=request == "workers",
            tasks=request == "tasks",
            categories=request == "categories",
        )["queues"]
        key = sections[request]
        return [report] if key is None else report[key]

    def workers_summary(self) -> list[dict[str, int]]:
        """How many connected workers have each combination of cores, memory, disk, GPUs."""
        counts: dict[tuple[int, ...], int] = {}
        for worker in self.status("workers"):
            r = worker["resources"]
            key = tuple(int(r.get(name, 0)) for name in RESOURCE_NAMES)
            counts[key] = counts.get(key, 0) + 1
        return [
            {"workers": n, "cores": c, "memory": m, "disk": d, "gpus": g} for (c, m, d, g), n in sorted(counts.items())
        ]

    def wait_for_task_id(self, task_id: int, timeout: float = -1) -> Task | None:
        """Like ``wait``, but only for the task ``task_id``; others stay for later ``wait`` calls."""
        return self._wait(timeout, lambda task: task.id == task_id)

    def enable_monitoring_full(self, *args: Any, **kwargs: Any) -> None:
        """As ``enable_monitoring`` (no time series are written)."""
        self.enable_monitoring()

    # -- the queue's workers (protocol/worker_control.py: read at each worker's heartbeat) ---
    def shutdown_workers(self, n: int) -> int:
        """Ask up to ``n`` workers of this queue (``n`` < 1: all) to exit, as Work Queue
        does: only workers holding no task now (none leased to them) are asked; the
        number asked is returned.  Each exits at its next heartbeat (at most 0.5 s), after
        finishing and delivering anything it claimed meanwhile."""
        from ..protocol.store import WORKER_TIMEOUT_MS

        count = int(n)
        snap = self._redis.call(lambda: self._store.snapshot(WORKER_TIMEOUT_MS))  # leases: exact now
        idle = [name for name in sorted(snap.workers) if not snap.running_by_worker.get(name)]
        chosen = idle if count < 1 else idle[:count]
        return self._redis.call(lambda: self._store.shutdown_workers(chosen))

    def block_host(self, host: str) -> None:
        """Workers on ``host`` (its name as the workers report it: ``Task.hostname``) take
        no task of this queue until ``unblock_host``; what they run finishes."""
        self.block_host_with_timeout(host, -1)

    def block_host_with_timeout(self, host: str, timeout: float) -> None:
        """``block_host`` for ``timeout`` seconds (< 1: until unblocked)."""
        self._redis.call(lambda: self._store.block_host(str(host), float(timeout)))

    def unblock_host(self, host: str | None = None) -> None:
        """Let ``host``'s workers take tasks again; every host when ``host`` is None."""
        self._redis.call(lambda: self._store.unblock_host(None if host is None else str(host)))

    def blocked_hosts(self) -> list[str]:
        """The hosts blocked now (Work Queue lists them as ``workers_blocked`` in its status)."""
        return self._redis.call(self._store.blocked_hosts)

    def blacklist(self, host: str) -> None:
        """Work Queue's older name of ``block_host``."""
        self.block_host(host)

    def blacklist_with_timeout(self, host: str, timeout: float) -> None:
        """Work Queue's older name of ``block_host_with_timeout``."""
        self.block_host_with_timeout(host, timeout)

    def blacklist_clear(self, host: str | None = None) -> None:
        """Work Queue's older name of ``unblock_host``."""
        self.unblock_host(host)

    def specify_num_tasks_left(self, ntasks: int) -> None:
        """Tell a ``wq.Factory`` of this queue (in this process) that ``ntasks`` more tasks
        are coming: it starts workers for them as if they waited (0 or less: none)."""
        self._num_tasks_left = max(0, int(ntasks))

    # -- nothing to tune -----------------------------------------------------------------
    specify_name = _ignored("specify_name", "a queue's name is given when it is created")
    specify_log = _ignored("specify_log", "use `wq-redis status` or WorkQueue.stats")
    specify_transactions_log = _ignored("specify_transactions_log", "use `wq-redis status` or WorkQueue.stats")
    specify_catalog_server = _ignored("specify_catalog_server", _CATALOG)
    specify_manager_mode = _ignored("specify_manager_mode", _CATALOG)
    specify_master_mode = _ignored("specify_master_mode", _CATALOG)
    specify_manager_preferred_connection = _ignored("specify_manager_preferred_connection", _MANAGER)
    specify_master_preferred_connection = _ignored("specify_master_preferred_connection", _MANAGER)
    specify_keepalive_interval = _ignored("specify_keepalive_interval", "workers renew leases (--lease-seconds)")
    specify_keepalive_timeout = _ignored("specify_keepalive_timeout", "workers renew leases (--lease-seconds)")
    estimate_capacity = _ignored("estimate_capacity", "stats report capacity always")
    activate_fast_abort = _ignored("activate_fast_abort", "no fast abort; use specify_running_time_max")
    activate_fast_abort_category = _ignored(
        "activate_fast_abort_category", "no fast abort; use specify_running_time_max"
    )
    specify_algorithm = _ignored("specify_algorithm", "workers choose tasks that fit them")
    specify_task_order = _ignored("specify_task_order", "tasks run by priority, then FIFO")
    specify_priority = _ignored("specify_priority", "queues have no priority among themselves")
    initialize_categories = _ignored(
        "initialize_categories",
        "categories learn from the tasks of this run; use specify_category_first_allocation_guess",
    )

    # -- effects wq-redis cannot give --------------------------------------------------------
    specify_password = _unsupported("specify_password", "put the password in the Redis URL (redis://:PASSWORD@host)")
    specify_password_file = _unsupported("specify_password_file", "put the password in the Redis URL")
    specify_min_taskid = _unsupported("specify_min_taskid", "ids come from the queue's Redis counter")
    specify_draining_by_hostname = _unsupported("specify_draining_by_hostname", "send the workers SIGTERM: they drain")
    invalidate_cache_file = _unsupported(
        "invalidate_cache_file",
        "cached inputs are found by content hash, so a changed file is a new entry and stale copies are never used",
    )


class TaskCompat:
    """Work Queue task calls without an effect here, and a few twins."""

    if TYPE_CHECKING:  # what the methods below use of Task (task.py sets or defines each)
        _spec: TaskSpec
        _id: int | None
        _fields: dict[bytes, bytes]
        submit_time: int | None

        @property
        def finish_time(self) -> int | None: ...
        @property
        def hostname(self) -> str | None: ...
        def specify_running_time_max(self, seconds: float) -> None: ...

    def clone(self) -> Self:
        """A copy of this task's specification that can be submitted again."""
        new = copy.copy(self)
        new._spec = copy.deepcopy(self._spec)
        new._id, new._fields, new.submit_time = None, {}, None
        if hasattr(new, "_value_loaded"):
            new._value_loaded, new._value = False, None  # type: ignore[attr-defined]  # PythonTask's (hasattr)
        return new

    @property
    def execute_cmd_finish(self) -> int | None:
        """When the task finished on the worker, microseconds since the epoch."""
        return self.finish_time

    def specify_running_time(self, useconds: int) -> None:
        """The running-time limit in microseconds (Work Queue's older form)."""
        self.specify_running_time_max(int(useconds) / 1e6)

    @property
    def host(self) -> str | None:
        """Where the task ran (a host name: workers have no address of their own here)."""
        return self.hostname

    specify_monitor_output = _ignored("specify_monitor_output", "measured resources are in resources_measured")
    specify_snapshot_file = _ignored("specify_snapshot_file", "there is no resource monitor")
    specify_algorithm = _ignored("specify_algorithm", "workers choose tasks that fit them")

    def specify_running_time_min(self, seconds: int) -> None:
        """Work Queue sends such a task only to a worker whose end of life
        (``work_queue_worker --wall-time``) leaves it ``seconds``, and to any worker without
        one; so do wq-redis workers (``wq-redis worker --wall-time``, checked in the claim).
        Less than 1: no minimum."""
        seconds = int(seconds)
        self._spec.running_time_min = seconds if seconds >= 1 else 0

    specify_start_time_min = _ignored(
        "specify_start_time_min",
        "Work Queue itself never delays a task for it (its scheduler compares the start, kept in seconds, "
        "with the time in microseconds); submit the task when it may start",
    )
    specify_coprocess = _unsupported("specify_coprocess", "use PythonTask: warm Python processes are built in")
    specify_environment = _unsupported("specify_environment", "install the environment on the workers")
    specify_package = _unsupported("specify_package", "install the environment on the workers")
