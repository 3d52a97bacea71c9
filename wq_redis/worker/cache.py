"""The worker's caches: inputs declared with ``cache=True`` (``FileCache``) and the bodies
of the functions its PythonTasks call (``FunctionBodies``).

One file per content digest in ``DIR``, fetched from Redis by the first task that needs it
(tasks needing it at the same moment wait for that one fetch), evicted least recently
used once the cache holds more than its size.  Tasks get a hard link into their sandbox
(a copy across file systems), so a cached input takes its disk space once however many
tasks use it.  A task that writes to its linked input changes the cached copy; the cache
notices the changed size or time stamp at the next use and fetches the file again.
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

if TYPE_CHECKING:
    from ..protocol.store import QueueStore

DIGEST_HEX_LENGTH = 64  # a SHA-256 digest in hex
LINK_TRIES = 2  # a file evicted between lookup and link is fetched once more, then the task fails
FUNCTIONS_KEPT = 128  # function bodies a worker keeps: far more than the functions one workload calls


class _Entry(NamedTuple):
    size: int
    mtime_ns: int


class FileCache:
    """Content-addressed, size-bounded (LRU) store of cached inputs, shared by the tasks of
    one worker (thread-safe)."""

    def __init__(self, directory: str, max_bytes: int, fetch: Callable[[str], bytes | None]) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
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

    def _path(self, digest: str) -> str:
        if len(digest) != DIGEST_HEX_LENGTH or not all(c in "0123456789abcdef" for c in digest):
            raise OSError(f"not a content digest: {digest[:80]!r}")
        return os.path.join(self.directory, digest)

    def path(self, digest: str) -> str:
        """The cached file of ``digest``, fetched first if needed.  Raises OSError when
        Redis no longer has it."""
        path = self._path(digest)
        while True:
            with self._lock:
                entry = self._entries.get(digest)
                if entry is not None:
                    if _intact(path, entry):
                        self._entries.move_to_end(digest)
                        self.hits += 1
                        return path
                    del self._entries[digest]
                loading = self._loading.get(digest)
                if loading is None:
                    loading = self._loading[digest] = threading.Event()
                    break
            loading.wait()  # another task is fetching it; then look again
        try:
            entry = self._download(digest, path)
        finally:
            with self._lock:
                self._loading.pop(digest).set()
        with self._lock:
            self._entries[digest] = entry
            self.fetches += 1
            self._evict(keep=digest)
        return path

    def _download(self, digest: str, path: str) -> _Entry:
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
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(temporary, 0o444)  # shared by hard links: read-only for the tasks
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
        st = os.stat(path)
        return _Entry(st.st_size, st.st_mtime_ns)

    def _evict(self, keep: str) -> None:
        """Drop least recently used files until the cache fits (never ``keep``, the one just
        added: a file larger than the whole cache stays until the next one arrives)."""
        total = sum(e.size for e in self._entries.values())
        for digest in list(self._entries):
            if total <= self.max_bytes:
                return
            if digest == keep:
                continue
            total -= self._entries.pop(digest).size
            self.evictions += 1
            try:
                os.unlink(os.path.join(self.directory, digest))
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Remove the cache (the worker is stopping; sandboxes keep their hard links)."""
        with self._lock:
            self._entries.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def link_into(self, digest: str, destination: str) -> None:
        """Put the cached file of ``digest`` at ``destination`` (a hard link, else a copy)."""
        os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
        for attempt in range(LINK_TRIES):
            path = self.path(digest)
            try:
                os.link(path, destination)
                return
            except FileNotFoundError:
                if attempt:  # evicted between lookup and link, twice: give up
                    raise
            except OSError:  # another file system, or links not allowed: copy
                shutil.copyfile(path, destination)
                return


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
