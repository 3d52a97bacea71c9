"""The worker's caches: inputs declared with ``cache=True`` (``FileCache``) and the bodies
of the functions its PythonTasks call (``FunctionBodies``).

One file per content digest in ``DIR``, fetched from Redis by the first task that needs it
(tasks needing it at the same moment wait for that one fetch), evicted least recently
used once the cache holds more than its size.  Tasks get a hard link into their sandbox
(a copy across file systems), so a cached input takes its disk space once however many
tasks use it.  Every cached file is read-only; an input whose mode has more (an
executable) gets a read-only copy with those bits, made once.  A task that writes to its
linked input changes the cached copy; the cache notices the changed size or time stamp at
the next use and fetches the file again.
The cache lives as long as its worker: a new worker starts with an empty one.

A function body is read once by digest and kept in memory (``FunctionBodies``): the tasks
of a map call one function thousands of times.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from ..protocol.signing import verify_function_body
from ..protocol.sizes import MAX_TASK_BYTES

if TYPE_CHECKING:
    from ..protocol.store import QueueStore

DIGEST_HEX_LENGTH = 64  # a SHA-256 digest in hex
LINK_TRIES = 2  # a file evicted between lookup and link is fetched once more, then the task fails
READ_ONLY = 0o444  # a cached file's mode: tasks share it by hard links
WRITE_BITS = 0o222
FUNCTIONS_KEPT = 128  # function bodies a worker keeps: far more than the functions one workload calls


class _Entry(NamedTuple):
    size: int
    mtime_ns: int


class FileCache:
    """Content-addressed, size-bounded (LRU) store of cached inputs, shared by the tasks of
    one worker (thread-safe).

    Entries are named by a key: the SHA-256 of a cached input (fetched from Redis), the
    digest of a URL or file command (``made``: fetched or run once), or a digest and a
    mode (``DIGEST.555``, a copy of the read-only file with other permission bits, for
    inputs such as executables that need them).  Every entry is read-only: tasks share it
    by hard links, so its mode is set once, when it is made, and never changed."""

    def __init__(
        self,
        directory: str,
        max_bytes: int,
        fetch: Callable[[str], bytes | None],
        item_bytes: int = MAX_TASK_BYTES,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.item_bytes = item_bytes  # the most a URL or file command may make (--max-task-bytes)
        self._fetch = fetch
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._loading: dict[str, threading.Event] = {}
        self.fetches = 0  # downloads from Redis
        self.hits = 0
        self.evictions = 0
        # Start empty: files left by an earlier worker in the same --workdir are not in our
        # books (their size, or whether a task changed them), so they go.
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)

    @property
    def size(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def path(self, digest: str) -> str:
        """The cached file of ``digest``, fetched first if needed.  Raises OSError when
        Redis no longer has it."""
        return self._obtain(_checked(digest), lambda temporary: self._download(digest, temporary), READ_ONLY)

    def made(self, key: str, make: Callable[[str], None], mode: int) -> str:
        """The cached file named ``key`` (a hex digest), made by ``make(path)`` if needed
        (a URL fetched, a command run); raises what ``make`` raises (nothing is kept)."""
        return self._obtain(_checked(key), make, mode & ~WRITE_BITS)

    def _obtain(self, key: str, make: Callable[[str], None], mode: int) -> str:
        path = os.path.join(self.directory, key)
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    if _intact(path, entry):
                        self._entries.move_to_end(key)
                        self.hits += 1
                        return path
                    del self._entries[key]
                loading = self._loading.get(key)
                if loading is None:
                    loading = self._loading[key] = threading.Event()
                    break
            loading.wait()  # another task is fetching it; then look again
        try:
            entry = self._make(path, make, mode)
        finally:
            with self._lock:
                self._loading.pop(key).set()
        with self._lock:
            self._entries[key] = entry
            self._evict(keep=key)
        return path

    def _make(self, path: str, make: Callable[[str], None], mode: int) -> _Entry:
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".part-")
        os.close(fd)
        try:
            make(temporary)
            os.chmod(temporary, mode)  # before anyone links it: never changed afterwards
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            raise
        st = os.stat(path)
        return _Entry(st.st_size, st.st_mtime_ns)

    def _download(self, digest: str, temporary: str) -> None:
        try:
            data = self._fetch(digest)
        except Exception as exc:  # Redis away: this attempt fails as INPUT_MISSING
            raise OSError(f"cannot fetch cached input {digest[:12]}: {exc}") from None
        if data is None:
            raise FileNotFoundError(
                f"cached input {digest[:12]} is no longer in Redis (expired or evicted); submit the task again"
            )
        if hashlib.sha256(data).hexdigest() != digest:
            raise OSError(f"cached input {digest[:12]} arrived corrupted")
        with open(temporary, "wb") as handle:
            handle.write(data)
        with self._lock:
            self.fetches += 1

    def _variant(self, digest: str, mode: int) -> str:
        """The cached file of ``digest`` with permission bits ``mode`` (read-only)."""

        def copy(temporary: str) -> None:
            for attempt in range(LINK_TRIES):
                try:
                    shutil.copyfile(self.path(digest), temporary)
                    return
                except FileNotFoundError:  # evicted between lookup and copy
                    if attempt:
                        raise

        return self._obtain(f"{_checked(digest)}.{mode:03o}", copy, mode)

    def _evict(self, keep: str) -> None:
        """Drop least recently used files until the cache fits (never ``keep``, the one just
        added: a file larger than the whole cache stays until the next one arrives)."""
        total = sum(e.size for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.max_bytes:
                return
            if key == keep:
                continue
            total -= self._entries.pop(key).size
            self.evictions += 1
            try:
                os.unlink(os.path.join(self.directory, key))
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Remove the cache (the worker is stopping; sandboxes keep their hard links)."""
        with self._lock:
            self._entries.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def link_into(self, digest: str, destination: str, mode: int | None = None) -> None:
        """Put the cached file of ``digest`` at ``destination`` (a hard link, else a copy),
        with the permission bits ``mode`` less its write bits (shared, so read-only):
        the plain read-only file for the usual modes, else a copy made once per mode."""
        shared = READ_ONLY if mode is None else mode & ~WRITE_BITS
        if shared == READ_ONLY:
            self.link(lambda: self.path(digest), destination)
        else:
            self.link(lambda: self._variant(digest, shared), destination)

    def link(self, obtain: Callable[[], str], destination: str) -> None:
        """Put the cache's file ``obtain()`` returns at ``destination``: a hard link, else
        a copy (with its mode)."""
        os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
        for attempt in range(LINK_TRIES):
            path = obtain()
            try:
                os.link(path, destination)
                return
            except FileNotFoundError:
                if attempt:  # evicted between lookup and link, twice: give up
                    raise
            except OSError:  # another file system, or links not allowed: copy
                shutil.copy(path, destination)
                return


def _checked(key: str) -> str:
    """A cache key as a file name: a SHA-256 in hex, nothing else (another client's garbage
    never names a path)."""
    if len(key) != DIGEST_HEX_LENGTH or not all(c in "0123456789abcdef" for c in key):
        raise OSError(f"not a content digest: {key[:80]!r}")
    return key


def _intact(path: str, entry: _Entry) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns


class FunctionBodies:
    """Function bodies by digest: a small LRU cache of this worker, else Redis."""

    def __init__(self, store: QueueStore, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes  # a larger body fails its tasks (TaskTooLarge)
        self._bodies: OrderedDict[str, bytes] = OrderedDict()  # least recently used first

    def get(self, digest: str) -> bytes | None:
        """The body of ``digest`` (checked against it when read from Redis), or None."""
        body = self._bodies.get(digest)
        if body is not None:
            self._bodies.move_to_end(digest)
        else:
            body = self.store.function(digest, self.max_bytes)  # TaskTooLarge fails its tasks
            if body is not None:
                verify_function_body(digest, body)
                self._bodies[digest] = body
                while len(self._bodies) > FUNCTIONS_KEPT:
                    self._bodies.popitem(last=False)
        return body
