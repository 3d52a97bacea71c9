"""The manager's side of input files: cached inputs stored once, directories packed, and
the size limits checked before a task is sent.  What the fields look like on the wire is
protocol/files.py.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..protocol.fields import (
    ARGS,
    CACHED_COMMAND_FILE,
    CACHED_DIR,
    CACHED_FILE,
    CACHED_URL_FILE,
    COMMAND_FILE,
    INLINE_DIR,
    INLINE_FILE,
    INPUT_MODE,
    URL_FILE,
)
from ..protocol.files import (
    DEFAULT_MODE,
    FileTooLarge,
    mode_text,
    pack_directory,
    sha256,
    transferred_mode,
    tree_signature,
)
from ..protocol.sizes import MAX_TASK_BYTES as DEFAULT_MAX_TASK_BYTES
from ..protocol.sizes import show_size

if TYPE_CHECKING:
    from ..protocol.store import QueueStore
    from .spec import InputFile
    from .task import Task

FILE_TTL_SECONDS = 7 * 24 * 3600  # a cached input outlives its last submit by this much
FILE_REFRESH_SECONDS = 3600  # how often a manager re-times (or re-stores) an input it uses
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024  # Redis refuses strings past 512 MB
COMMAND_SHOWN = 60  # characters of a task's command quoted in an error
BUFFER_MODE = 0o777  # a buffer's file, as Work Queue sends it (executable: a script runs as ./NAME)
MEMO_ENTRIES = 65_536  # digests a manager remembers (of files it sent, and that Redis holds)
Body = bytes | Callable[[], bytes]  # the bytes, or how to read them when needed


class FileStager:
    """Turns a task's inputs into hash fields, enforcing the size limits, and uploads cached
    inputs once: each digest is stored with ``SET NX`` and re-timed (``EXPIRE``) at most
    once an hour by this manager, never re-sent while Redis still has it.

    With ``use_cache=False`` every input is inlined (what a bare ``encode_task`` does).
    """

    def __init__(
        self,
        use_cache: bool = True,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_task_bytes: int = DEFAULT_MAX_TASK_BYTES,
    ) -> None:
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

    def input_fields(self, inputs: Sequence[InputFile]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        total = 0
        for item in inputs:
            value: Any
            mode = BUFFER_MODE if item.data is not None else DEFAULT_MODE
            if item.source is not None:  # a URL or file command: the worker makes the file
                name, value, size = _source_field(item), item.source, 0
            elif item.directory:
                name, value, size = self._directory(item)
            elif item.cache and self.use_cache:
                digest, size, mode = self._cached_file(item)
                name, value = CACHED_FILE, digest
            else:
                if item.local is not None:
                    st = _stat(item.local)
                    self._check_file(item, st.st_size)
                    mode = transferred_mode(st.st_mode)
                value = _read(item)
                size = len(value)
                self._check_file(item, size)
                name = INLINE_FILE
            fields[name + item.remote] = value
            if mode != DEFAULT_MODE:  # an executable, a private file...: the worker sets it
                fields[INPUT_MODE + item.remote] = mode_text(mode)
            total += size
        self.last_inputs_bytes = total
        if total > self.max_task_bytes:
            raise FileTooLarge(
                f"the task's input files total {show_size(total)}, over the limit of "
                f"{show_size(self.max_task_bytes)} per task (WorkQueue.specify_file_limits)"
            )
        return fields

    def check_task_size(self, task: Task, fields: dict[str, Any], bodies: dict[str, bytes]) -> None:
        """Refuse (FileTooLarge, a ValueError) a task whose arguments, function and inputs
        together exceed ``max_task_bytes``: a worker with the same ``--max-task-bytes``
        would fail it unloaded.  ``fields``/``bodies``: ``encode_task``'s, just after it ran
        (``last_inputs_bytes`` is its inputs' total, cached ones included)."""
        arguments = len(fields.get(ARGS) or b"")
        function = sum(map(len, bodies.values())) if bodies else 0
        inputs = self.last_inputs_bytes
        total = arguments + function + inputs
        if total > self.max_task_bytes:
            raise FileTooLarge(
                f"task {task.command[:COMMAND_SHOWN]!r} holds {show_size(total)} (arguments {show_size(arguments)}, "
                f"function {show_size(function)}, input files {show_size(inputs)}), over the limit of "
                f"{show_size(self.max_task_bytes)} per task: workers fail such tasks unloaded (wq-redis worker "
                f"--max-task-bytes, default {show_size(DEFAULT_MAX_TASK_BYTES)}); raise both with "
                "WorkQueue.specify_file_limits(max_task_bytes=...) and --max-task-bytes, "
                "or pass the data as an input file or by reference"
            )

    def _check_file(self, item: InputFile, size: int) -> None:
        if size > self.max_file_bytes:
            what = repr(item.local) if item.local else f"buffer {item.remote!r}"
            raise FileTooLarge(
                f"input file {what} ({show_size(size)}) exceeds the limit of {show_size(self.max_file_bytes)} "
                "per file (WorkQueue.specify_file_limits)"
            )

    def _cached_file(self, item: InputFile) -> tuple[str, int, int]:
        """(digest, size, mode) of a cached file or buffer, its bytes left to upload."""
        if item.data is not None:
            self._check_file(item, len(item.data))
            digest = sha256(item.data)
            self._want(digest, item.data)
            return digest, len(item.data), BUFFER_MODE
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
        return known[0], known[1], transferred_mode(st.st_mode)

    def _directory(self, item: InputFile) -> tuple[str, Any, int]:
        local = item.local
        assert local is not None
        pack: Callable[[], bytes] = lambda: pack_directory(local, item.recursive, self.max_file_bytes)  # noqa: E731
        if not (item.cache and self.use_cache):
            data = pack()
            return INLINE_DIR, data, len(data)
        if not os.path.isdir(local):
            raise FileNotFoundError(f"directory {local!r} of the task does not exist")
        signature = repr(tree_signature(local)).encode() if item.recursive else b""
        key = ("dir", os.path.abspath(local), item.recursive, sha256(signature))
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

    def flush(self, store: QueueStore) -> None:
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


def _source_field(item: InputFile) -> str:
    """The field prefix of a URL or file command input, cached by the worker or not."""
    if item.url:
        return CACHED_URL_FILE if item.cache else URL_FILE
    return CACHED_COMMAND_FILE if item.cache else COMMAND_FILE


def _read(item: InputFile) -> bytes:
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
