"""The submit buffer: ``WorkQueue.submit`` returns at once, a daemon thread sends the tasks.

``submit`` reserves the task's id (ids come in blocks), encodes the task and appends its
row to the buffer; the flusher thread sends whatever accumulated meanwhile in one round
trip (``QueueStore.submit``: one pipeline of batched ``submit.lua`` calls).  Every call
that reads or changes the queue in Redis (``wait``, ``submit_many``, ``cancel_*``,
``stats``, ``empty``, ``task_state``, ``close``) first flushes in its own thread, so a
submit followed by a wait costs no extra latency, and interpreter exit flushes too.

A caller that submits right after its own ``wait`` (a submit/wait loop) does not wake the
thread for that lone row: the next ``wait`` carries it, and waking a thread for nothing
was a fifth of a task's round trip on a 2-core machine.  Should the caller go quiet
instead, the thread's periodic check sends it within IDLE_CHECK_SECONDS.

A flush that fails (Redis away) keeps its rows, in order, at the head of the buffer; the
thread retries with backoff, and the next API call flushes itself and raises the error if
it persists.  A row sent twice (a reply lost on the wire, then a retry) changes nothing:
``submit.lua`` skips a task whose hash holds that row's earlier write.

A flush refused for a reason only the owner can settle (``hold_on``: Redis lost the
queue's state, and the manager must attach again before anything is queued) also keeps
its rows, but the thread does not retry them: the next API call flushes, meets the
error, and the owner settles it (the manager resubmits every task it holds, these rows'
included, with ``send_now(..., replace=True)``, which drops the buffered rows it sends
anew).
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from ..protocol.fields import ARGS

Row = tuple[int, str, float, dict[str, Any]]  # (id, member "CLASS|TAG", priority, hash fields): submit.lua's
ROW_FIELDS: Final = 3  # where a Row holds its hash fields
T = TypeVar("T")

MAX_ROWS = 10_000  # a submit that finds this many rows buffered flushes itself (back-pressure)
MAX_BYTES = 64 << 20  # ... or this many bytes of arguments (see _size)
IDLE_CHECK_SECONDS = (
    0.05  # how often an idle flusher sends rows nobody woke it for (and looks whether its queue is gone)
)
CARRY_SECONDS = 0.005  # a lone row submitted this soon after a wait() is left for the next wait() to carry
RETRY_MIN_SECONDS, RETRY_MAX_SECONDS = 0.05, 2.0
LINGER_SECONDS = 0.0005  # between a wake-up and the flush

_live: weakref.WeakSet[SubmitBuffer] = weakref.WeakSet()


class SubmitBuffer:
    """Rows of submitted tasks not yet in Redis, and the thread that sends them."""

    def __init__(self, send: Callable[[list[Row]], Any], hold_on: tuple[type[BaseException], ...] = ()) -> None:
        """``send(rows)`` queues rows in Redis (raising when it did not); after an error of
        a type in ``hold_on`` the thread leaves the rows for the owner's next flush."""
        self._send = send
        self._hold_on = hold_on
        self._rows: list[Row] = []
        self._bytes = 0
        self._lock = threading.Lock()  # guards _rows and _bytes
        self._flushing = threading.Lock()  # one flush at a time: rows reach Redis in order
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._carried_at = float("-inf")  # when a wait() last took the rows along
        self.error: BaseException | None = None  # of the last flush, while it is not retried successfully

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: Row) -> bool:
        """Buffer one row for the flusher; True when the buffer is full (flush now)."""
        with self._lock:
            self._rows.append(row)
            self._bytes += _size(row)
            full = len(self._rows) >= MAX_ROWS or self._bytes >= MAX_BYTES
            lone = len(self._rows) == 1
        if self._thread is None:
            self._start()
        if lone and time.monotonic() - self._carried_at < CARRY_SECONDS:
            return full  # a submit/wait loop: the next wait() carries it
        if not self._kick.is_set():
            self._kick.set()
        return full

    def flush(self) -> None:
        """Send everything buffered, in this thread; raises when Redis cannot take it (the
        rows stay buffered, and are retried)."""
        if self._rows or self.error is not None:
            with self._flushing:
                self._flush_locked()

    def send_now(self, rows: Sequence[Row], replace: bool = False) -> None:
        """Send ``rows`` after everything buffered before them, in this thread.  When that
        fails, ``rows`` are taken back (the caller raises: they are not submitted) and the
        earlier rows stay buffered.  ``replace``: buffered rows with the ids of ``rows``
        are dropped first (``rows`` are those tasks encoded anew: sent once, not twice)."""
        with self._flushing:
            with self._lock:
                if replace:
                    self._drop(rows)
                self._rows.extend(rows)
            try:
                self._flush_locked()
            except BaseException:
                with self._lock:
                    self._drop(rows)
                raise

    def _drop(self, rows: Sequence[Row]) -> None:
        """Take the buffered rows with the ids of ``rows`` out (holding the lock)."""
        ids = {row[0] for row in rows}
        self._rows = [row for row in self._rows if row[0] not in ids]
        self._bytes = sum(_size(row) for row in self._rows)

    def flush_into(self, call: Callable[[list[Row]], T]) -> T:
        """``call(rows)`` with the rows buffered now (maybe none), which it sends along with
        its own request, in one round trip; when it fails they are buffered again (and
        retried).  Waits for a flush in flight, not for ``call``: it may block a while."""
        with self._flushing:
            rows = self._take()
        try:
            result = call(rows)
        except BaseException as exc:
            self._put_back(rows, exc)
            raise
        if rows:
            self.error = None
        self._carried_at = time.monotonic()
        return result

    def _take(self) -> list[Row]:
        with self._lock:
            rows, self._rows, self._bytes = self._rows, [], 0
        return rows

    def _put_back(self, rows: list[Row], exc: BaseException) -> None:
        if rows:
            with self._lock:
                self._rows[:0] = rows
                self._bytes += sum(_size(row) for row in rows)
            self.error = exc
            if not self.held:
                self._kick.set()  # the thread retries them

    @property
    def held(self) -> bool:
        """Whether the last flush failed for a reason only the owner can settle (the
        thread leaves the rows alone meanwhile)."""
        return isinstance(self.error, self._hold_on)

    def _flush_locked(self) -> None:
        rows = self._take()
        if rows:
            try:
                self._send(rows)
            except BaseException as exc:
                self._put_back(rows, exc)
                raise
        self.error = None

    def close(self) -> None:
        """Flush (raising if that fails: nothing is dropped), then stop the thread."""
        self.flush()
        self._closed = True
        self._kick.set()
        _live.discard(self)

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=_background, args=(weakref.ref(self), self._kick), name="wq-redis-submit", daemon=True
        )
        self._thread.start()
        _live.add(self)


def _size(row: Row) -> int:
    """What a row weighs against MAX_BYTES: its pickled arguments."""
    return len(row[ROW_FIELDS].get(ARGS, b""))


def _background(ref: weakref.ref[SubmitBuffer], kick: threading.Event) -> None:
    delay = RETRY_MIN_SECONDS
    while True:
        kicked = kick.wait(IDLE_CHECK_SECONDS)
        buffer = ref()
        if buffer is None or buffer._closed:
            return
        if buffer.held:  # the owner's next call settles it: no retries (they would be refused too)
            kick.clear()
            del buffer
            continue
        if not kicked and not buffer._rows:
            del buffer
            continue
        if kicked:  # more rows come; and a wait() now carries them itself
            del buffer
            time.sleep(LINGER_SECONDS)
            buffer = ref()
            if buffer is None:
                return
        kick.clear()
        try:
            buffer.flush()
            delay = RETRY_MIN_SECONDS
        except Exception:  # kept in buffer.error for the next API call; retried here (unless held)
            if buffer.held:
                del buffer
                continue
            kick.set()
            del buffer
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
            continue
        del buffer


@atexit.register
def _flush_at_exit() -> None:
    for buffer in list(_live):
        try:
            buffer.flush()
        except Exception as exc:
            print(
                f"wq-redis: {len(buffer)} submitted task(s) could not be sent to Redis at exit: {exc}", file=sys.stderr
            )
