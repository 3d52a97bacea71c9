"""WorkQueue: the manager side of Work Queue's API, on Redis.

>>> import wq_redis as wq
>>> with wq.WorkQueue("demo", local_workers=2) as q:
...     q.submit(wq.PythonTask(pow, 2, 10))
...     t = q.wait(5)
...     print(t.output)   # 1024

This module builds the queue (connection, attach, local Redis and workers) and holds its
lifecycle, stats and category calls; the steps of a task's way are the queue's parts:
submitting.py, retrieving.py, cancelling.py and recovery.py (queue_state.py declares the
state they share, books.py the record of this manager's tasks).  The queue's helpers
(executor, map/pair/tree_reduce, wait_async) use it through seam.py.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..protocol.connection import open_client, resolve_url
from ..protocol.durability import durability_from
from ..protocol.fields import STATE
from ..protocol.partitions import resolve_shards
from ..protocol.serialize import FunctionCache
from ..protocol.signing import Signer, secret_from
from ..protocol.store import WORKER_TIMEOUT_MS, QueueStateLost
from ..protocol.tls import tls_url
from ..protocol.views import QueueView
from .allocating import Allocating
from .asyncwait import wait_async
from .books import TaskBooks
from .cancelling import Cancelling
from .categories import category_stats, ids_to_cancel_in_category
from .codes import WORK_QUEUE_WAITFORTASK, TaskState
from .compat import WorkQueueCompat
from .files import FileStager
from .mapping import map_tasks, pair_tasks, reduce_tree
from .packs import PackPlanner
from .reconnect import Reconnect, reconnect_timeout_from
from .recovery import Recovering, new_incarnation
from .retrieving import Retrieving
from .shards import open_store
from .stats import Stats, stats_from_snapshot, waiting_cores
from .submit_buffer import SubmitBuffer
from .submitting import Submitting
from .task import Task

log = logging.getLogger("wq_redis.client.queue")


class LocalWorkerPool(Protocol):
    """Workers a queue started on this machine (``local_workers=N``) and stops when it closes."""

    def stop(self, timeout: float = 10.0, wake: Callable[[str], None] | None = None) -> None: ...


HUNGRY_MINIMUM = 10  # hungry() is true while fewer tasks than this wait (Work Queue's default)
# redis-py's own retries, inside each of the manager's (reconnect.py): a few quick ones for
# a connection cut at the wrong moment; longer outages are reconnect_timeout's
QUICK_RETRY: dict[str, Any] = dict(retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3))


def _close_at_exit(queue_ref: weakref.ref[WorkQueue]) -> None:
    """A queue the program left open (no ``close()``, no ``with``) is closed at interpreter
    exit, before the embedded Redis stops: its local workers then stop at once instead of
    retrying a server that is gone, and remove their work directories."""
    queue = queue_ref()
    if queue is not None:
        try:
            queue._close(wait_for_redis=False)  # an exiting program does not wait out an outage
        except Exception as exc:  # at exit there is no caller left to raise to
            logging.getLogger("wq_redis").warning("closing queue %r at exit: %s", queue.name, exc)


class WorkQueue(Allocating, Submitting, Retrieving, Cancelling, Recovering, WorkQueueCompat):
    """A named queue of tasks in Redis; workers anywhere that reach Redis run them.

    ``WorkQueue(name="default", redis_url=None)``: the URL falls back to ``WQ_REDIS_URL``,
    then ``REDIS_URL``; with neither, a private local Redis server is started (and stopped
    with the last queue object).  ``local_workers=N`` also starts N local workers, with
    ``local_worker_resources={"cores": 4, "gpus": 1}`` declaring each one's resources.
    ``keep_results=SECONDS`` keeps retrieved tasks in Redis that long (default: deleted);
    ``enforce_limits=True`` kills tasks that use more memory or disk than they declared.
    ``secret=`` (or ``WQ_REDIS_SECRET``) signs tasks and checks signed results (HMAC).
    ``tls_ca_cert=``, ``tls_cert=``, ``tls_key=`` (or ``WQ_TLS_CA_CERT``, ``WQ_TLS_CERT``,
    ``WQ_TLS_KEY``): files for TLS to the Redis at ``redis_url`` (see protocol/tls.py);
    local workers get them too.

    ``reconnect_timeout=SECONDS`` (or ``WQ_RECONNECT_TIMEOUT``; default 60): while Redis is
    unreachable (restart, failover, network fault), every call that needs it (``submit``,
    ``wait``, ``empty``, ``stats``, ``cancel_*``, the background sending of submitted tasks)
    keeps trying with backoff for up to this long, logging once that it waits and once that
    Redis is back; only then does it raise ``wq.RedisUnavailable``.  Nothing submitted is
    lost meanwhile: ``WorkQueue(name)`` on the same Redis re-attaches to the queue's tasks.

    ``durability="none"|"replica"|"aof"`` (or ``WQ_DURABILITY``; default none): a submit
    is acknowledged once Redis has it in memory (none), in a replica's (replica: WAIT), or
    fsynced to its AOF (aof: WAITAOF, Redis >= 7.2 / valkey >= 8.0); the local workers it
    starts deliver their results so too.  docs/production.md says what each survives.

    ``shards=N`` keeps the queue's tasks in N partitions, each with a hash tag of its own,
    which Redis Cluster spreads over its primaries: the queue's depth and rate grow with
    the cluster (protocol/partitions.py, client/shards.py).  Default: the count stored when
    the queue was first made sharded, else 1 (one partition: the keys as always).

    The manager counts its own tasks: ``empty()`` is true once every task it submitted (or,
    re-attached, found unfinished in the queue) came back or was cancelled, whatever else
    is written into Redis.  Should Redis lose the queue's state (restarted without its
    data), the manager notices at its next round trip and resubmits what it still holds.
    """

    def __init__(
        self,
        name: str | int = "default",
        redis_url: str | None = None,
        *,
        local_workers: int = 0,
        local_worker_resources: Mapping[str, Any] | None = None,
        keep_results: int = 0,
        enforce_limits: bool = False,
        secret: str | bytes | None = None,
        reconnect_timeout: float | None = None,
        tls_ca_cert: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        durability: str | None = None,
        shards: int | None = None,
        port: int | None = None,
        **work_queue_options: Any,
    ) -> None:
        if isinstance(name, int):  # WorkQueue(9123): Work Queue's positional port
            port, name = name, work_queue_options.pop("name", None) or "default"
        if port or work_queue_options:  # WorkQueue(0): Work Queue's 'any port', nothing ignored
            warnings.warn(
                f"ignored Work Queue options {sorted(work_queue_options) + (['port'] if port else [])}: "
                "workers find this queue through Redis",
                stacklevel=2,
            )
        self.name = str(name)
        self.keep_results = int(keep_results)
        self.enforce_limits = bool(enforce_limits)
        key = secret_from(secret)
        self._signer = Signer(key, self.name) if key else None
        self.reconnect_timeout = reconnect_timeout_from(reconnect_timeout)
        self.durability = durability_from(durability)
        url = tls_url(resolve_url(redis_url), tls_ca_cert, tls_cert, tls_key)
        self._embedded = url is None
        self.redis_url = url or self._start_local_redis()
        self._redis = Reconnect(self.redis_url, self.name, self.reconnect_timeout)
        try:
            self._client = open_client(self.redis_url, **QUICK_RETRY)
            self.shards = self._redis.call(lambda: resolve_shards(self._client, self.name, shards))
            self._store = open_store(self._client, self.name, self.shards, durability=self.durability)
            self._incarnation, maybe_busy = self._redis.call(lambda: self._store.attach(new_incarnation(), 0))
        except Exception:
            self._release_server()
            raise
        self._functions = FunctionCache()
        self._uploaded = {}
        self._ids = iter(())
        self._placements = {}
        self._buffer = SubmitBuffer(self._send_rows, hold_on=(QueueStateLost,))
        self._packer = PackPlanner()
        self._books = TaskBooks()
        self._unacked = []
        self._released = []
        self._drained = False
        self._init_allocation()
        self._files = FileStager()
        self.hungry_minimum = HUNGRY_MINIMUM
        self._local: LocalWorkerPool | None = None
        # Registered after the embedded server's own exit hook, so it runs before that one
        # (atexit is last in, first out): local workers stop while Redis is still there.
        self._exit_hook: functools.partial[None] | None = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        if maybe_busy:
            self._adopt_unfinished()
        if local_workers:
            self._local = self._start_local_workers(local_workers, local_worker_resources)

    def worker_environment(self) -> dict[str, str]:
        """What a worker of this queue needs in its environment besides its options: the
        Redis URL (never on a command line, where other users could read a password) and,
        for a signed queue, its secret.  Local workers and ``wq.Factory`` start theirs with it."""
        env = {"WQ_REDIS_URL": self.redis_url}
        if self.durability != "none":
            env["WQ_DURABILITY"] = self.durability
        if self._signer is not None:
            env["WQ_REDIS_SECRET"] = os.fsdecode(self._signer.secret)
        return env

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> WorkQueue:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Send the tasks still buffered (waiting for Redis up to ``reconnect_timeout``; then
        raises: the queue stays open, nothing is dropped), stop local workers and, for an
        embedded Redis, the server when no queue uses it."""
        self._close(wait_for_redis=True)

    def _close(self, wait_for_redis: bool) -> None:
        exit_hook = getattr(self, "_exit_hook", None)
        if exit_hook is not None:
            atexit.unregister(exit_hook)
            self._exit_hook = None
        if getattr(self, "_buffer", None) is not None and getattr(self, "_client", None) is not None:
            if wait_for_redis:
                self._send_buffered()
                self._redis.call(self._buffer.close)
            else:
                self._buffer.close()
        if self._local is not None:
            self._local.stop(wake=self._store.ring_worker if getattr(self, "_client", None) is not None else None)
            self._local = None
        if getattr(self, "_unacked", None) and getattr(self, "_client", None) is not None:
            try:
                if wait_for_redis:
                    self._flush_acks()
                else:  # one try: an acknowledgement is not worth holding up an exit or a collection
                    self._retrieve_once(0, 0.0)
            except redis.RedisError:
                pass  # not acknowledged: a manager re-attaching gets them again
        if getattr(self, "_client", None) is not None:
            self._client.close()
            self._client = None  # type: ignore[assignment]  # closed: readers test getattr(..., None)
        self._release_server()

    def _release_server(self) -> None:
        if self._embedded:
            self._embedded = False
            self._stop_local_redis()

    # -- where Redis and workers come from when none are given -----------------------------
    # The client layer only names these steps: ``wq.WorkQueue`` (embedded/queue.py) fills
    # them in with an embedded Redis server and worker processes on this machine.
    def _start_local_redis(self) -> str:
        """The URL of a Redis to use when none is given (``redis_url``, ``WQ_REDIS_URL``,
        ``REDIS_URL``)."""
        raise ValueError(
            "no Redis URL: pass redis_url=, or set WQ_REDIS_URL or REDIS_URL "
            "(wq_redis.WorkQueue starts an embedded Redis instead)"
        )

    def _stop_local_redis(self) -> None:
        """Give back what ``_start_local_redis`` started (the queue is closing)."""

    def _start_local_workers(self, count: int, resources: Mapping[str, Any] | None) -> LocalWorkerPool:
        """``count`` workers on this machine for ``local_workers=``."""
        raise ValueError("local_workers= needs wq_redis.WorkQueue, which starts worker processes on this machine")

    def __del__(self) -> None:
        try:
            self._close(wait_for_redis=False)  # garbage collection never waits for Redis
        except Exception:
            pass

    # -- categories ------------------------------------------------------------------
    def _store_category(self, category: str) -> None:
        """Write a category's maximum resources into Redis, for `wq-redis status -A`."""
        maximum = self._allocation.get(category).max_allocation
        resources_json = json.dumps({k: int(v) for k, v in maximum.items() if v > -1})
        self._redis.call(lambda: self._store.set_category(category, resources_json))

    def enable_monitoring(self, *args: Any, **kwargs: Any) -> None:
        """Work Queue's resource monitoring: from now on, tasks that use more memory or disk
        than they declared are killed and come back as RESOURCE_EXHAUSTION or
        DISK_ALLOC_FULL (the same as ``WorkQueue(..., enforce_limits=True)``)."""
        self.enforce_limits = True

    def empty(self) -> bool:
        """True when every task this manager submitted (or adopted when it re-attached) has
        been returned by ``wait`` or cancelled.  One round trip, which also notices whether
        Redis lost the queue's state (then the tasks held are resubmitted)."""
        if self._books.results:
            return False
        self._retrieve(0)
        return not self._books.results and self._books.outstanding() <= 0

    def hungry(self) -> bool:
        """True when workers could take more tasks than are waiting."""
        self._send_buffered()
        snapshot = self._redis.call(lambda: self._store.snapshot(WORKER_TIMEOUT_MS))
        stats = stats_from_snapshot(snapshot)
        if stats.tasks_waiting < self.hungry_minimum:
            return True
        return waiting_cores(snapshot.waiting) < stats.total_cores - stats.committed_cores

    # -- state, stats, cancel --------------------------------------------------------
    @property
    def stats(self) -> Stats:
        """A fresh snapshot with Work Queue's field names (one round trip)."""
        self._flush_acks()
        snapshot = self._redis.call(lambda: self._store.snapshot(WORKER_TIMEOUT_MS))
        return stats_from_snapshot(snapshot).count_unsent_failures(self._books.unsent_failures)

    def task_state(self, task_id: int) -> TaskState:
        books = self._books
        if task_id in books.results:
            return TaskState.RETRIEVED
        if task_id in books.returned:
            return TaskState.DONE
        if task_id in books.cancelled:
            return TaskState.CANCELED
        self._send_buffered()
        (state,) = self._redis.call(lambda: self._store.task_fields(books.hash_id(task_id), STATE))
        return TaskState(int(state)) if state is not None else TaskState.UNKNOWN

    # -- helpers ---------------------------------------------------------------------
    def map(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        progress: bool | None = None,
    ) -> list[Any]:
        """``[func(x) for x in iterable]`` run on the workers; results in input order.

        Streams: items are submitted in batches while results come back.  A failed call's
        slot holds the exception (or ``PythonTaskNoResult``), as Work Queue's map does.
        Each task runs ``chunksize`` items; without one it is chosen as
        ``multiprocessing.Pool.map`` does (about four chunks per core of the live workers,
        capped; see ``mapping.auto_chunksize``); ``chunksize=1`` is one task per item.
        ``progress`` shows a progress bar (default: when stderr is a terminal).
        """
        return map_tasks(self, func, iterable, chunksize, progress)

    def pair(
        self,
        func: Callable[[tuple[Any, Any]], Any],
        seq1: Iterable[Any],
        seq2: Iterable[Any],
        chunksize: int = 1,
        progress: bool | None = None,
    ) -> list[Any]:
        """``[func(p) for p in itertools.product(seq1, seq2)]`` run on the workers, in that
        order: ``func`` takes one ``(x, y)`` tuple, as Work Queue's ``pair`` passes it (its
        manual's two-argument lambda fails under Work Queue too); failed calls' slots hold
        their exceptions.

        >>> q.pair(lambda p: p[0] * p[1], [1, 2], [10, 20])
        [10, 20, 20, 40]
        """
        return pair_tasks(self, func, seq1, seq2, chunksize, progress)

    def tree_reduce(
        self, func: Callable[[list[Any]], Any], seq: Iterable[Any], chunksize: int = 2, progress: bool | None = None
    ) -> Any:
        """Reduce ``seq`` to one value by calling ``func`` on consecutive chunks of up to
        ``chunksize`` elements (``func`` takes a list, e.g. ``sum`` or ``max``), then on
        chunks of those results, and so on, as Work Queue's ``tree_reduce`` does.  Chunks
        are submitted as soon as their inputs are ready; a failed call raises its error."""
        return reduce_tree(self, func, seq, chunksize, progress)

    async def wait_async(self, timeout: float = WORK_QUEUE_WAITFORTASK) -> Task | None:
        """``wait`` for asyncio programs: the event loop keeps running while it waits.

        >>> task = await queue.wait_async(5)
        """
        return await wait_async(self, timeout)

    # -- categories and files ----------------------------------------------------------
    def stats_category(self, category: str) -> Stats:
        """Work Queue's per-category statistics: this manager's tasks of ``category``."""
        self._flush_acks()
        return category_stats(self._books, self._view(), category)

    def cancel_by_category(self, category: str) -> list[Task]:
        """Cancel every waiting or running task of ``category``; returns them."""
        self._send_buffered()
        return self._cancel(ids_to_cancel_in_category(self._books, self._view(), category))

    def specify_file_limits(self, max_file_bytes: int | None = None, max_task_bytes: int | None = None) -> None:
        """Largest input file, and largest task (arguments, function and input files
        together), that ``submit`` accepts (a ``ValueError`` names the offending file or
        task); defaults 256 MiB and 512 MiB.  Workers fail unloaded any task over their own
        ``--max-task-bytes`` (default 512 MiB too): raise both together."""
        if max_file_bytes is not None:
            self._files.max_file_bytes = int(max_file_bytes)
        if max_task_bytes is not None:
            self._files.max_task_bytes = int(max_task_bytes)

    @property
    def files_uploaded(self) -> int:
        """Cached input files (and directories) this manager stored in Redis: each distinct
        content once, however many tasks use it."""
        return self._files.files_uploaded

    def _view(self) -> QueueView:
        """The queue's state in Redis as ``wq-redis status`` reads it (for the category calls)."""
        return QueueView(self._client, self.name, self.shards)
