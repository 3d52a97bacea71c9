"""Input and output files beyond plain bytes: cached inputs, directories, size limits.

How inputs travel (hash fields of the task, see ``wire.py``):
  ``in:NAME``    a file's bytes, inline in the task hash (the default);
  ``cin:NAME``   the SHA-256 of a file declared with ``cache=True``; its bytes are stored
                 once under ``file:DIGEST`` and kept by each worker in its LRU cache;
  ``tin:NAME``   a directory packed as tar, inline;
  ``ctin:NAME``  the SHA-256 of a directory's tar, stored once like a cached file.
Outputs come back as ``o:NAME`` (a file) and ``od:NAME`` (a directory as tar).

Directories are packed deterministically (sorted, owner and group cleared) so an unchanged
tree packs to the same bytes and a cached directory is stored once.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

from .sizes import MAX_TASK_BYTES as DEFAULT_MAX_TASK_BYTES, show_size

if TYPE_CHECKING:
    from .store import QueueStore
    from .task import InputFile, Task

INLINE_FILE, CACHED_FILE, INLINE_DIR, CACHED_DIR = "in:", "cin:", "tin:", "ctin:"
OUTPUT_FILE, OUTPUT_DIR = "o:", "od:"

FILE_TTL_SECONDS = 7 * 24 * 3600  # a cached input outlives its last submit by this much
FILE_REFRESH_SECONDS = 3600  # how often a manager re-times (or re-stores) an input it uses
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024  # Redis refuses strings past 512 MB
MEMO_ENTRIES = 65_536  # digests a manager remembers (of files it sent, and that Redis holds)

Body = Union[bytes, Callable[[], bytes]]


class FileTooLarge(ValueError):
    """An input file, or a task's inputs together, exceed the queue's size limits."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# -- directories as tar ---------------------------------------------------------------
def _walk(root: str) -> list[tuple[str, str]]:
    """(absolute path, name inside the tar) of every entry under ``root``, sorted."""
    out = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(directory, name)
            out.append((path, os.path.relpath(path, root)))
    return out


def tree_signature(root: str) -> tuple[Any, ...]:
    """A cheap fingerprint of a tree (names, sizes, mtimes): equal trees need no repacking."""
    entries = []
    for path, name in _walk(root):
        st = os.lstat(path)
        entries.append((name, st.st_mode, st.st_size, st.st_mtime_ns))
    return tuple(entries)


def pack_directory(root: str, recursive: bool = True, max_file_bytes: int | None = None) -> bytes:
    """The tree under ``root`` as an uncompressed tar (just the empty directory when not
    ``recursive``).  Regular files, directories and symbolic links; nothing else."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"directory {root!r} of the task does not exist")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, name in _walk(root) if recursive else []:
            info = tar.gettarinfo(path, arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                if max_file_bytes is not None and info.size > max_file_bytes:
                    raise FileTooLarge(f"file {path!r} ({_mb(info.size)}) exceeds the limit of "
                                       f"{_mb(max_file_bytes)} per input file")
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            elif info.isdir() or info.issym():
                tar.addfile(info)
    return buffer.getvalue()


def unpack_directory(data: bytes | str, destination: str) -> None:
    """Unpack a tar made by ``pack_directory`` (its bytes, or the path of a file holding
    them) into ``destination`` (created), refusing entries that would land outside it.
    Raises OSError for anything that cannot be unpacked."""
    os.makedirs(destination, exist_ok=True)
    source = {"name": data} if isinstance(data, str) else {"fileobj": io.BytesIO(data)}
    try:
        with tarfile.open(mode="r:", **source) as tar:  # type: ignore[call-overload]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, filter="data")
                return
            _check_members(tar, destination)
            tar.extractall(destination)
    except (tarfile.TarError, ValueError) as exc:
        raise OSError(f"cannot unpack directory into {destination!r}: {exc}") from None


def _check_members(tar: tarfile.TarFile, destination: str) -> None:
    """What the 'data' filter of newer Pythons refuses: paths and links leaving the tree."""
    root = os.path.realpath(destination)
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(destination, member.name))
        if os.path.commonpath([root, target]) != root or member.islnk() or member.isdev():
            raise ValueError(f"refusing tar entry {member.name!r}: it leaves {destination!r}")
        if member.issym() and (os.path.isabs(member.linkname) or ".." in member.linkname.split("/")):
            raise ValueError(f"refusing symbolic link {member.name!r} -> {member.linkname!r}")


# -- manager side -----------------------------------------------------------------------
class FileStager:
    """Turns a task's inputs into hash fields, enforcing the size limits, and uploads cached
    inputs once: each digest is stored with ``SET NX`` and re-timed (``EXPIRE``) at most
    once an hour by this manager, never re-sent while Redis still has it.

    With ``use_cache=False`` every input is inlined (what a bare ``encode_task`` does).
    """

    def __init__(self, use_cache: bool = True, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 max_task_bytes: int = DEFAULT_MAX_TASK_BYTES) -> None:
        self.use_cache = use_cache
        self.max_file_bytes = max_file_bytes
        self.max_task_bytes = max_task_bytes
        self.files_uploaded = 0  # cached inputs this manager stored (not already in Redis)
        self.bytes_uploaded = 0
        # (path, signature) -> (digest, size), and digest -> when Redis last had it (per this
        # manager); both bounded, least recently added dropped first
        self._digests: OrderedDict[tuple[Any, ...], tuple[str, int]] = OrderedDict()
        self._confirmed: OrderedDict[str, float] = OrderedDict()
        self._pending: dict[str, Body] = {}  # digests to check (and upload) before the submit
        self.last_inputs_bytes = 0  # the inputs' total of the last input_fields call (see check_task_size)

    def input_fields(self, inputs: Sequence["InputFile"]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        total = 0
        for item in inputs:
            if item.directory:
                name, value, size = self._directory(item)
            elif item.cache and self.use_cache:
                digest, size = self._cached_file(item)
                name, value = CACHED_FILE, digest
            else:
                if item.local is not None:
                    self._check_file(item, _size(item.local))
                value = _read(item)
                size = len(value)
                self._check_file(item, size)
                name = INLINE_FILE
            fields[name + item.remote] = value
            total += size
        self.last_inputs_bytes = total
        if total > self.max_task_bytes:
            raise FileTooLarge(f"the task's input files total {_mb(total)}, over the limit of "
                               f"{_mb(self.max_task_bytes)} per task (WorkQueue.specify_file_limits)")
        return fields

    def check_task_size(self, task: "Task", fields: dict[str, Any], bodies: dict[str, bytes]) -> None:
        """Refuse (FileTooLarge, a ValueError) a task whose arguments, function and inputs
        together exceed ``max_task_bytes``: a worker with the same ``--max-task-bytes``
        would fail it unloaded.  ``fields``/``bodies``: ``encode_task``'s, just after it ran
        (``last_inputs_bytes`` is its inputs' total, cached ones included)."""
        arguments = len(fields.get("args") or b"")
        function = sum(map(len, bodies.values())) if bodies else 0
        inputs = self.last_inputs_bytes
        total = arguments + function + inputs
        if total > self.max_task_bytes:
            raise FileTooLarge(
                f"task {task.command[:60]!r} holds {show_size(total)} (arguments {show_size(arguments)}, function "
                f"{show_size(function)}, input files {show_size(inputs)}), over the limit of "
                f"{show_size(self.max_task_bytes)} per task: workers fail such tasks unloaded (wq-redis worker "
                f"--max-task-bytes, default {show_size(DEFAULT_MAX_TASK_BYTES)}); raise both with "
                "WorkQueue.specify_file_limits(max_task_bytes=...) and --max-task-bytes, "
                "or pass the data as an input file or by reference")

    def _check_file(self, item: "InputFile", size: int) -> None:
        if size > self.max_file_bytes:
            what = repr(item.local) if item.local else f"buffer {item.remote!r}"
            raise FileTooLarge(f"input file {what} ({_mb(size)}) exceeds the limit of {_mb(self.max_file_bytes)} "
                               "per file (WorkQueue.specify_file_limits)")

    def _cached_file(self, item: "InputFile") -> tuple[str, int]:
        if item.data is not None:
            self._check_file(item, len(item.data))
            digest = sha256(item.data)
            self._want(digest, item.data)
            return digest, len(item.data)
        assert item.local is not None
        st = _stat(item.local)
        self._check_file(item, st.st_size)
        key = ("file", os.path.abspath(item.local), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        known = self._digests.get(key)
        if known is None:
            data = _read(item)
            known = self._remember(key, (sha256(data), len(data)))
            self._want(known[0], data)
        else:
            path = item.local
            self._want(known[0], lambda: _read_path(path))
        return known

    def _directory(self, item: "InputFile") -> tuple[str, Any, int]:
        assert item.local is not None
        pack: Callable[[], bytes] = lambda: pack_directory(item.local, item.recursive, self.max_file_bytes)  # noqa: E731
        if not (item.cache and self.use_cache):
            data = pack()
            return INLINE_DIR, data, len(data)
        if not os.path.isdir(item.local):
            raise FileNotFoundError(f"directory {item.local!r} of the task does not exist")
        signature = repr(tree_signature(item.local)).encode() if item.recursive else b""
        key = ("dir", os.path.abspath(item.local), item.recursive, sha256(signature))
        known = self._digests.get(key)
        if known is None:
            data = pack()
            known = self._remember(key, (sha256(data), len(data)))
            self._want(known[0], data)
        else:
            self._want(known[0], pack)
        return CACHED_DIR, known[0], known[1]

    def _remember(self, key: tuple[Any, ...], known: tuple[str, int]) -> tuple[str, int]:
        self._digests[key] = known
        while len(self._digests) > MEMO_ENTRIES:
            self._digests.popitem(last=False)
        return known

    def _want(self, digest: str, body: Body) -> None:
        stale = time.monotonic() - FILE_REFRESH_SECONDS
        if self._confirmed.get(digest, stale - 1) < stale and not isinstance(self._pending.get(digest), bytes):
            self._pending[digest] = body

    def flush(self, store: "QueueStore") -> None:
        """Make sure Redis holds every cached input the tasks being submitted refer to."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        digests = list(pending)
        try:
            present = store.refresh_files(digests, FILE_TTL_SECONDS)
            bodies = {}
            for digest, found in zip(digests, present):
                if found:
                    continue
                body = pending[digest]
                data = body if isinstance(body, bytes) else body()
                if sha256(data) != digest:
                    raise RuntimeError("a cached input file changed while it was being submitted; submit again")
                bodies[digest] = data
            stored = store.put_files(bodies, FILE_TTL_SECONDS)
        except RuntimeError:
            raise
        except BaseException:  # Redis away: still to do (the manager tries again)
            self._pending = {**pending, **self._pending}
            raise
        self.files_uploaded += len(stored)
        self.bytes_uploaded += sum(len(bodies[d]) for d in stored)
        now = time.monotonic()
        for digest in digests:
            self._confirmed.pop(digest, None)
            self._confirmed[digest] = now
        while len(self._confirmed) > MEMO_ENTRIES:
            self._confirmed.popitem(last=False)

    def forget_uploads(self) -> None:
        """Redis lost what this manager stored: store each cached input again when a task
        next needs it."""
        self._confirmed.clear()


def _read(item: "InputFile") -> bytes:
    if item.data is not None:
        return item.data
    assert item.local is not None
    return _read_path(item.local)


def _read_path(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise FileNotFoundError(f"input file {path!r} of the task cannot be read: {exc.strerror}") from None


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise FileNotFoundError(f"input file {path!r} of the task cannot be read: {exc.strerror}") from None


def _size(path: str) -> int:
    return _stat(path).st_size
