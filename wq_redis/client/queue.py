"""WorkQueue: the manager side of Work Queue's API, on Redis.

>>> import wq_redis as wq
>>> with wq.WorkQueue("demo", local_workers=2) as q:
...     q.submit(wq.PythonTask(pow, 2, 10))
...     t = q.wait(5)
...     print(t.output)   # 1024
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import logging
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..protocol import gcpause
from ..protocol.connection import open_client, resolve_url
from ..protocol.packing import member_ids
from ..protocol.resources import DEFAULT_CORES, RESOURCE_NAMES, Request, queue_member
from ..protocol.serialize import FunctionCache
from ..protocol.signing import SignatureError, Signer, secret_from
from ..protocol.store import WORKER_TIMEOUT_MS, QueueStateLost, QueueStore, Submitted
from .asyncwait import wait_async
from .categories import CategoryBook, cancel_category, category_stats
from .codes import WORK_QUEUE_WAITFORTASK, Result, TaskState
from .compat import WorkQueueCompat
from .files import FileStager
from .mapping import map_tasks, pair_tasks, reduce_tree
from .packs import PackPlanner
from .reconnect import Reconnect, reconnect_timeout_from
from .recovery import adopt_unfinished, failed_locally, new_incarnation, recover_lost_state
from .stats import Stats, stats_from_snapshot, waiting_cores
from .submit_buffer import SubmitBuffer
from .task import Task
from .wire import apply_results, encode_task, task_from_fields, unreadable_result

log = logging.getLogger("wq_redis.client.queue")


class LocalWorkerPool(Protocol):
    """Workers a queue started on this machine (``local_workers=N``) and stops when it closes."""

    def stop(self, timeout: float = 10.0, wake: Callable[[str], None] | None = None) -> None: ...


ID_BLOCK = 1024  # task ids reserved per round trip
RETRIEVE_BATCH = 512  # finished tasks fetched per round trip
FUNCTION_TTL_SECONDS = 7 * 24 * 3600  # a stored function outlives its last submit by this much
FUNCTION_REFRESH_SECONDS = 3600  # how often a manager re-stores (and re-times) a function it uses
# redis-py's own retries, inside each of the manager's (reconnect.py): a few quick ones for
# a connection cut at the wrong moment; longer outages are reconnect_timeout's
QUICK_RETRY = dict(retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3))
IGNORED_IDS_LOGGED = 20  # ids named in one log line about tasks that are not this manager's


def _bytes_fields(fields: Mapping[str, Any]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


def _some(ids: Sequence[int]) -> str:
    """Ids for a log line: the first ``IGNORED_IDS_LOGGED`` of them."""
    return ", ".join(map(str, ids[:IGNORED_IDS_LOGGED])) + (" ..." if len(ids) > IGNORED_IDS_LOGGED else "")


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


class WorkQueue(WorkQueueCompat):
    """A named queue of tasks in Redis; workers anywhere that reach Redis run them.

    ``WorkQueue(name="default", redis_url=None)``: the URL falls back to ``WQ_REDIS_URL``,
    then ``REDIS_URL``; with neither, a private local Redis server is started (and stopped
    with the last queue object).  ``local_workers=N`` also starts N local workers, with
    ``local_worker_resources={"cores": 4, "gpus": 1}`` declaring each one's resources.
    ``keep_results=SECONDS`` keeps retrieved tasks in Redis that long (default: deleted);
    ``enforce_limits=True`` kills tasks that use more memory or disk than they declared.
    ``secret=`` (or ``WQ_REDIS_SECRET``) signs tasks and checks signed results (HMAC).

    ``reconnect_timeout=SECONDS`` (or ``WQ_RECONNECT_TIMEOUT``; default 60): while Redis is
    unreachable (restart, failover, network fault), every call that needs it (``submit``,
    ``wait``, ``empty``, ``stats``, ``cancel_*``, the background sending of submitted tasks)
    keeps trying with backoff for up to this long, logging once that it waits and once that
    Redis is back; only then does it raise ``wq.RedisUnavailable``.  Nothing submitted is
    lost meanwhile: ``WorkQueue(name)`` on the same Redis re-attaches to the queue's tasks.

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
        port: int | None = None,
        **work_queue_options: Any,
    ) -> None:
        if isinstance(name, int):  # WorkQueue(9123): Work Queue's positional port
            port, name = name, work_queue_options.pop("name", None) or "default"
        if port is not None or work_queue_options:
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
        url = resolve_url(redis_url)
        self._embedded = url is None
        self.redis_url = url or self._start_local_redis()
        self._redis = Reconnect(self.redis_url, self.name, self.reconnect_timeout)
        try:
            self._client = open_client(self.redis_url, **QUICK_RETRY)
            self._store = QueueStore(self._client, self.name)
            self._incarnation, maybe_busy = self._redis.call(lambda: self._store.attach(new_incarnation(), 0))
        except Exception:
            self._release_server()
            raise
        self._functions = FunctionCache()
        self._uploaded: dict[str, float] = {}  # digest -> when this manager last stored it
        self._ids: Iterable[int] = iter(())
        self._placements: dict[tuple[Any, ...], tuple[Request, str]] = {}
        self._buffer = SubmitBuffer(self._send_rows, hold_on=(QueueStateLost,))
        self._submitted: dict[int, Task] = {}
        self._packer = PackPlanner()
        self._pack_of: dict[int, int] = {}  # task id -> the pack it was submitted in (packing.py)
        self._packs: dict[int, list[int]] = {}  # pack id -> its tasks, until the pack comes back
        self._results: collections.OrderedDict[int, Task] = collections.OrderedDict()
        self._returned: set[int] = set()
        self._unacked: list[int] = []  # taken from Redis, acknowledged with the next retrieve
        self._released: list[int] = []  # taken from Redis but not ours: released with the next retrieve
        self._adopted: set[int] = set()  # outstanding tasks of an earlier manager (recovery.py)
        self._id_ceiling = 0  # the highest task id this manager reserved or adopted
        self._drained = False  # the last retrieve emptied the done list
        self._cancelled: set[int] = set()
        self._categories: dict[str, dict[str, int]] = {}
        self._category_book = CategoryBook()
        self._files = FileStager()
        self.hungry_minimum = 10
        self._local: LocalWorkerPool | None = None
        # Registered after the embedded server's own exit hook, so it runs before that one
        # (atexit is last in, first out): local workers stop while Redis is still there.
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        if maybe_busy:
            adopt_unfinished(self)
        if local_workers:
            self._local = self._start_local_workers(local_workers, local_worker_resources)

    def _outstanding(self) -> int:
        """This manager's tasks not yet taken from Redis nor cancelled: those it submitted,
        and those it adopted when it re-attached (see recovery.py).  Never Redis' counters:
        anyone may write those."""
        return len(self._submitted) + len(self._adopted)

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
        if getattr(self, "_exit_hook", None) is not None:
            atexit.unregister(self._exit_hook)
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
            self._client = None  # type: ignore[assignment]
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
    def specify_category_max_resources(self, category: str, resources: Mapping[str, int]) -> None:
        """Resources given to tasks of ``category`` that declare none themselves."""
        unknown = set(resources) - set(RESOURCE_NAMES)
        if unknown:
            raise ValueError(f"unknown resources {sorted(unknown)}; use {RESOURCE_NAMES}")
        self._categories[category] = {k: int(v) for k, v in resources.items() if v is not None and v >= 0}
        self._placements.clear()
        self._store_category(category)

    def _store_category(self, category: str) -> None:
        """Write a category's resources into Redis, for `wq-redis status -A`."""
        resources_json = json.dumps(self._categories[category])
        self._redis.call(lambda: self._store.set_category(category, resources_json))

    def enable_monitoring(self, *args: Any, **kwargs: Any) -> None:
        """Work Queue's resource monitoring: from now on, tasks that use more memory or disk
        than they declared are killed and come back as RESOURCE_EXHAUSTION or
        DISK_ALLOC_FULL (the same as ``WorkQueue(..., enforce_limits=True)``)."""
        self.enforce_limits = True

    def specify_max_resources(self, resources: Mapping[str, int]) -> None:
        self.specify_category_max_resources("default", resources)

    def _placement(self, task: Task) -> tuple[Request, str]:
        """The task's resolved request and its ready queue ``CLASS|TAG`` (memoized: most
        tasks of a queue share a handful of (category, request, tag) combinations)."""
        spec = task._spec
        key = (spec.category, spec.cores, spec.memory, spec.disk, spec.gpus, spec.tag)
        found = self._placements.get(key)
        if found is None:
            category = self._categories.get(spec.category, {})
            fallback = self._categories.get("default", {})
            values = {}
            for name in RESOURCE_NAMES:
                value = getattr(spec, name)
                if value is None:
                    value = category.get(name, fallback.get(name, DEFAULT_CORES if name == "cores" else 0))
                values[name] = value
            request = Request(**values)
            if len(self._placements) >= 4096:
                self._placements.clear()
            found = self._placements[key] = (request, queue_member(request, spec.tag))
        return found

    # -- submit ----------------------------------------------------------------------
    def _next_id(self) -> int:
        for task_id in self._ids:
            return task_id
        block = self._redis.call(lambda: self._store.reserve_ids(ID_BLOCK, self._id_ceiling))
        self._id_ceiling = max(self._id_ceiling, block[-1])
        self._ids = iter(block)
        return next(iter(self._ids))

    def submit(self, task: Task) -> int:
        """Queue ``task``; returns its id at once.  A background thread sends it to Redis
        (with whatever else was submitted meanwhile, one round trip); ``wait`` and every
        other call that reads the queue send it first."""
        if self._buffer.error is not None:
            self._send_buffered()  # an earlier send failed: raises if Redis stays away
        if not isinstance(task, Task) or task._spec.inputs:
            return self.submit_many([task])[0]  # input files are staged and stored first
        fields, bodies, request, member = self._encode(task)
        self._upload_functions(bodies)
        row = self._row(task, request, member, fields)
        self._submitted[row[0]] = task
        self._category_book.submitted([task])
        if self._buffer.add(row):
            self._send_buffered()
        return row[0]

    def submit_many(self, tasks: Sequence[Task]) -> list[int]:
        """Queue many tasks in one round trip (with anything ``submit`` buffered before);
        returns their ids in order.  If Redis cannot take them, raises: they are not queued."""
        # the loops over the tasks pause the cyclic collector (gcpause); the calls to Redis do not
        with gcpause.paused(), self._functions.one_call():
            encoded = [self._encode(task) for task in tasks]
        bodies: dict[str, bytes] = {}
        for _, needed, _, _ in encoded:
            bodies.update(needed)
        self._upload_functions(bodies)
        self._redis.call(lambda: self._files.flush(self._store))
        with gcpause.paused():
            rows = [
                self._row(task, request, member, fields) for task, (fields, _, request, member) in zip(tasks, encoded)
            ]
            packs: dict[int, list[int]] = {}
            # a signature is per task, and enforced limits are watched per task: neither is packed
            if self._signer is None and not self.enforce_limits and len(rows) > 1:
                rows, packs = self._packer.pack(rows, tasks, self._next_id)
        lost: QueueStateLost | None = None
        try:
            self._redis.call(lambda: self._buffer.send_now(rows))
        except QueueStateLost as exc:  # nothing queued: they are resubmitted below, with all the others held
            lost = exc
        except BaseException:
            for task in tasks:
                task._id = None
            raise
        with gcpause.paused():
            self._packs.update(packs)
            for pack_id, members in packs.items():
                self._pack_of.update(dict.fromkeys(members, pack_id))
            for task in tasks:
                self._submitted[task._id] = task  # type: ignore[index]
            self._category_book.submitted(list(tasks))
        if lost is not None:
            recover_lost_state(self, lost.seen)
        return [task._id for task in tasks]  # type: ignore[misc]

    def _encode(self, task: Task) -> tuple[dict[str, Any], dict[str, bytes], Request, str]:
        """Check ``task`` and turn it into hash fields (nothing is queued or reserved yet)."""
        if not isinstance(task, Task):
            raise TypeError(f"submit takes Task or PythonTask objects, got {type(task).__name__}")
        if task._id is not None and task._id in self._submitted:
            raise ValueError(f"task {task._id} is already submitted")
        request, member = self._placement(task)
        fields, bodies = self._encode_fields(task, request)
        return fields, bodies, request, member

    def _encode_fields(self, task: Task, request: Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        self._files.last_inputs_bytes = 0
        fields, bodies = encode_task(task, request, self._functions, self.enforce_limits, self._files)
        self._files.check_task_size(task, fields, bodies)  # what no worker would load
        return fields, bodies

    def _upload_functions(self, bodies: dict[str, bytes]) -> None:
        """Store the function bodies Redis may not have (in this thread, before the tasks:
        a worker must find the function of any task it claims)."""
        now = time.monotonic()
        stale = now - FUNCTION_REFRESH_SECONDS  # stored longer ago: store again (and re-time)
        bodies = {d: b for d, b in bodies.items() if self._uploaded.get(d, stale - 1) < stale}
        if bodies:
            self._redis.call(lambda: self._store.put_functions(bodies, FUNCTION_TTL_SECONDS))
            self._uploaded.update(dict.fromkeys(bodies, now))

    def _send_rows(self, rows: list[tuple[int, str, float, dict[str, Any]]]) -> Submitted:
        """Queue ``rows`` in Redis (the submit buffer's sending, in whichever thread);
        raises ``QueueStateLost`` when Redis lost the queue's state: nothing was queued."""
        submitted = self._store.submit(rows, self._incarnation)
        self._report_replaced(submitted)
        return submitted

    def _report_replaced(self, submitted: Submitted) -> None:
        if submitted.replaced:
            ids = submitted.replaced
            log.warning(
                "queue %r: the hash of task(s) %s held data that this manager did not write (another client "
                "wrote at ids it was about to use): replaced by the task(s) it submitted",
                self.name,
                _some(ids),
            )

    def _send_buffered(self) -> None:
        """Send the tasks ``submit`` buffered, in this thread (waiting out a Redis outage, see
        reconnect.py); should Redis have lost the queue's state, nothing of them was queued,
        and every task held is resubmitted (recovery.py), these ones included."""
        try:
            self._redis.call(self._buffer.flush)
        except QueueStateLost as lost:
            recover_lost_state(self, lost.seen)

    def _row(
        self, task: Task, request: Request, member: str, fields: dict[str, Any]
    ) -> tuple[int, str, float, dict[str, Any]]:
        return self._signed_row(task, self._next_id(), member, fields)

    def _signed_row(
        self, task: Task, task_id: int, member: str, fields: dict[str, Any]
    ) -> tuple[int, str, float, dict[str, Any]]:
        task._id, task._fields = task_id, {}
        if self._signer is not None:
            fields["sig"] = self._signer.sign_task(task_id, _bytes_fields(fields))
        return task_id, member, task._spec.priority, fields

    # -- wait ------------------------------------------------------------------------
    def wait(self, timeout: float = WORK_QUEUE_WAITFORTASK) -> Task | None:
        """The next finished task, or None after ``timeout`` seconds (-1: wait forever).

        Returns None at once when nothing is outstanding, as Work Queue does.
        """
        return self._wait(timeout, lambda task: True)

    def wait_for_tag(self, tag: str, timeout: float = WORK_QUEUE_WAITFORTASK) -> Task | None:
        """Like ``wait`` but only for tasks with ``tag``; others stay for later ``wait`` calls."""
        return self._wait(timeout, lambda task: task.tag == tag)

    def _wait(self, timeout: float, wanted: Callable[[Task], bool]) -> Task | None:
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        while True:
            for task_id, task in self._results.items():
                if wanted(task):
                    return self._take_result(task_id)
            remaining = 5.0 if deadline is None else min(deadline - time.monotonic(), 5.0)
            # The done list was emptied by the last retrieve: any later completion rings the
            # wake key, so block on it and retrieve in the same round trip.
            block = remaining if self._drained and self._outstanding() > 0 and remaining > 0 else 0.0
            if self._retrieve(block=block):
                continue
            if self._outstanding() <= 0:  # nothing more will come
                return None
            if deadline is not None and deadline - time.monotonic() <= 0:
                return None

    def _retrieve(self, max_tasks: int = RETRIEVE_BATCH, block: float = 0.0) -> int:
        """Send the tasks still buffered, acknowledge what was taken last time and take a
        batch of finished tasks; with ``block``, first wait up to that many seconds for a
        completion.  One round trip (retried while Redis is away, see reconnect.py); should
        it show that Redis lost the queue's state, the tasks held are resubmitted."""
        rows, incarnation, submitted = self._redis.call(lambda: self._retrieve_once(max_tasks, block))
        self._report_replaced(submitted)
        with gcpause.paused():  # not while blocked above: other threads' garbage is collected then
            taken = self._take(rows, max_tasks)
        if submitted.lost is not None or incarnation != self._incarnation:
            # the buffered tasks it carried were refused then: they are among those resubmitted
            before = len(self._results)
            recover_lost_state(self, incarnation if submitted.lost is None else submitted.lost.seen)
            taken += len(self._results) - before  # tasks it could not resubmit come back failed
        return taken

    def _retrieve_once(
        self, max_tasks: int, block: float
    ) -> tuple[list[tuple[int, int, dict[bytes, bytes]]], str | None, Submitted]:
        acked, self._unacked = self._unacked, []
        released, self._released = self._released, []
        try:  # the tasks still buffered go first, in the same round trip
            return self._buffer.flush_into(
                lambda submit: self._store.retrieve(
                    max_tasks,
                    self.keep_results,
                    acked,
                    block,
                    submit,
                    released,
                    read_packs=self._signer is None,
                    incarnation=self._incarnation,
                )
            )
        except Exception:
            self._unacked = acked + self._unacked
            self._released = released + self._released
            raise

    def _take(self, rows: list[tuple[int, int, dict[bytes, bytes]]], max_tasks: int) -> int:
        """Make the retrieved rows of this manager's tasks finished tasks, for ``wait`` to
        hand out; the others are logged and released (never counted, never raised)."""
        acks = list(dict.fromkeys(ack_id for ack_id, _, _ in rows))  # a pack's members share one
        if max_tasks > 0:
            self._drained = len(acks) < max_tasks
        own: set[int] = set()
        strangers: list[int] = []
        taken = 0
        for ack_id, task_id, fields in rows:
            if task_id == ack_id and task_id in self._packs:  # a pack that came back unreadable
                own.add(ack_id)
                for member_id in self._packs[task_id]:
                    if self._pack_of.get(member_id) == ack_id:
                        taken += self._finished(member_id, dict(fields))
            elif self._owns(ack_id, task_id):
                own.add(ack_id)
                taken += self._finished(task_id, fields)
            else:
                strangers.append(task_id)
        if strangers:
            log.warning(
                "queue %r: ignored %d finished task(s) in the done list that this manager did not submit "
                "(written there by another client?): ids %s",
                self.name,
                len(strangers),
                _some(strangers),
            )
        self._unacked += [ack_id for ack_id in acks if ack_id in own]
        self._released += [ack_id for ack_id in acks if ack_id not in own]
        for ack_id in own:
            self._packs.pop(ack_id, None)
        return taken

    def _owns(self, hash_id: int, task_id: int) -> bool:
        """Whether a finished row (task ``task_id`` in hash ``hash_id``: its own, or its
        pack's) is one of this manager's: a task it waits for, in the hash it put it in; or
        one it has taken already (a duplicate, acknowledged again)."""
        if task_id in self._submitted or task_id in self._adopted:
            return self._pack_of.get(task_id, task_id) == hash_id
        return task_id in self._results or task_id in self._returned

    def _finished(self, task_id: int, fields: dict[bytes, bytes]) -> bool:
        """A finished task's results, for ``wait`` to hand out; False if it had them already.
        Never raises: what cannot be read makes the task come back failed, saying why."""
        if task_id in self._returned or task_id in self._results:
            return False  # handed out again: a lost reply, or Redis lost its last writes
        try:
            task = self._finished_task(task_id, fields)
        except Exception as exc:  # a last resort: the task comes back, failed, whatever it holds
            log.warning(
                "queue %r: the result of task %d cannot be read (%r); it comes back failed", self.name, task_id, exc
            )
            task = self._submitted.pop(task_id, None) or Task("<unreadable task>")
            self._adopted.discard(task_id)
            failed_locally(task, task_id, f"its result in Redis cannot be read: {exc!r}")
        self._results[task_id] = task
        self._category_book.finished(task)
        return True

    def _finished_task(self, task_id: int, fields: dict[bytes, bytes]) -> Task:
        self._packer.observe(fields)
        self._pack_of.pop(task_id, None)
        task = self._submitted.pop(task_id, None)
        if task is None:  # adopted: rebuilt from its hash
            self._adopted.discard(task_id)
            try:
                task = task_from_fields(task_id, fields)
            except Exception as exc:  # e.g. a spec without its command
                log.warning(
                    "queue %r: task %d has an unreadable spec (%r); it comes back failed", self.name, task_id, exc
                )
                return failed_locally(
                    Task("<unreadable task spec>"), task_id, f"the task's spec in Redis cannot be read: {exc!r}"
                )
        problem = unreadable_result(fields)
        if problem is not None:
            log.warning(
                "queue %r: task %d has an unreadable result (%s); it comes back failed", self.name, task_id, problem
            )
            return failed_locally(task, task_id, f"the task's result in Redis cannot be read: {problem}")
        if self._signer is not None and b"val" in fields:
            try:
                self._signer.verify_result(task_id, fields[b"val"], fields.get(b"rsig"))
            except SignatureError as exc:  # never unpickle what a stranger wrote
                fields = {**fields, b"r": str(int(Result.UNKNOWN)).encode(), b"err": str(exc).encode()}
                del fields[b"val"]
        try:
            apply_results(task, task_id, fields)
        except Exception as exc:  # e.g. an output file's local path cannot be written
            task._fields = {
                **task._fields,
                b"r": str(int(Result.OUTPUT_TRANSFER_ERROR)).encode(),
                b"err": f"output file could not be written on the manager: {exc}".encode(),
            }
        return task

    def _flush_acks(self) -> None:
        """Send buffered tasks, and tell Redis the tasks taken so far are ours, so counters
        and memory are current."""
        self._send_buffered()
        if self._unacked or self._released:
            self._retrieve(0)

    def empty(self) -> bool:
        """True when every task this manager submitted (or adopted when it re-attached) has
        been returned by ``wait`` or cancelled.  One round trip, which also notices whether
        Redis lost the queue's state (then the tasks held are resubmitted)."""
        if self._results:
            return False
        self._retrieve(0)
        return not self._results and self._outstanding() <= 0

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
        return stats_from_snapshot(self._redis.call(lambda: self._store.snapshot(WORKER_TIMEOUT_MS)))

    def task_state(self, task_id: int) -> TaskState:
        if task_id in self._results:
            return TaskState.RETRIEVED
        if task_id in self._returned:
            return TaskState.DONE
        if task_id in self._cancelled:
            return TaskState.CANCELED
        self._send_buffered()
        (state,) = self._redis.call(lambda: self._store.task_fields(self._hash_id(task_id), "s"))
        return TaskState(int(state)) if state is not None else TaskState.UNKNOWN

    def _hash_id(self, task_id: int) -> int:
        """The id of the hash that holds ``task_id`` in Redis: its pack's, if packed."""
        return self._pack_of.get(task_id, task_id)

    def _cancel_request(self, task_id: int) -> tuple[int, int | None]:
        """What cancel.lua is asked for ``task_id``: (its hash, None), or (its pack, itself)."""
        pack_id = self._pack_of.get(task_id)
        return (task_id, None) if pack_id is None else (pack_id, task_id)

    def cancel_by_taskid(self, task_id: int) -> Task | None:
        """Cancel a waiting, running or finished-but-not-returned task; returns it, or None."""
        cancelled = self._cancel([task_id])
        return cancelled[0] if cancelled else None

    def cancel_by_tasktag(self, tag: str) -> list[Task]:
        """Cancel every waiting or running task with ``tag``; returns them."""
        self._send_buffered()
        found = [i for i, t in self._results.items() if t.tag == tag]
        return self._cancel(found + self._redis.call(lambda: self._store.ids_with_tag(tag)))

    def _cancel(self, task_ids: Sequence[int]) -> list[Task]:
        self._send_buffered()
        self._drained = False  # the next wait asks at once: maybe nothing is outstanding now
        out = []
        task_ids = list(dict.fromkeys(task_ids))
        local = {i: self._results.pop(i) for i in task_ids if i in self._results}
        # a packed task is cancelled within its pack; a pack's id (from a tag or category
        # scan) cancels all of its members
        requests = list(dict.fromkeys(self._cancel_request(i) for i in task_ids if i not in local))
        answers = dict(zip(requests, self._redis.call(lambda: self._store.cancel(requests))))
        for task_id in task_ids:
            if task_id in local:
                found = [(task_id, local[task_id], None)]  # already finished: handed back as it is
            else:
                request = self._cancel_request(task_id)
                fields = answers.get(request)
                if not fields:
                    # not in Redis (any more): cancelled by this call re-sent after a lost
                    # reply, or lost with Redis' data; if it is ours, it is cancelled here
                    if task_id not in self._submitted and task_id not in self._adopted:
                        continue
                    fields = {}
                    ids = [task_id]
                # a whole pack (never with a secret: this manager made none, so it reads none)
                elif b"n" in fields and request[1] is None and self._signer is None:
                    try:
                        ids = member_ids(fields)
                    except Exception as exc:
                        log.warning(
                            "queue %r: cancelled pack %d has unreadable members (%r)", self.name, request[0], exc
                        )
                        ids = self._packs.get(request[0], [])
                    self._packs.pop(request[0], None)
                else:
                    ids = [task_id]
                found = []
                for i in ids:
                    self._adopted.discard(i)
                    task = self._submitted.pop(i, None)
                    if task is None:
                        try:
                            task = task_from_fields(i, fields)
                        except Exception as exc:  # a stranger's task, or a damaged one
                            log.warning("queue %r: cancelled task %d has an unreadable spec (%r)", self.name, i, exc)
                            task = Task("<unreadable task spec>")
                    found.append((i, task, fields))
            for found_id, task, fields in found:
                if fields is not None:
                    task._id = found_id
                    task._fields = {k: v for k, v in fields.items() if k in (b"a", b"w", b"host")}
                self._pack_of.pop(found_id, None)
                self._cancelled.add(found_id)
                self._category_book.cancelled(task)
                out.append(task)
        return out

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
        func: Callable[[Any, Any], Any],
        seq1: Iterable[Any],
        seq2: Iterable[Any],
        chunksize: int = 1,
        progress: bool | None = None,
    ) -> list[Any]:
        """``[func(x, y) for x, y in itertools.product(seq1, seq2)]`` run on the workers, in
        that order (Work Queue's ``pair``); failed calls' slots hold their exceptions."""
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
        return category_stats(self, category)

    def cancel_by_category(self, category: str) -> list[Task]:
        """Cancel every waiting or running task of ``category``; returns them."""
        self._send_buffered()
        return cancel_category(self, category)

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

    def _take_result(self, task_id: int) -> Task | None:
        task = self._results.pop(task_id, None)
        if task is not None:
            self._returned.add(task_id)
        return task
