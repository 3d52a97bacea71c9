"""Putting a task's inputs into its sandbox: files inline or from the cache, directories
unpacked, URLs fetched and file commands run (field names in protocol/files.py), each
with the permission bits it travelled with.

Modes: an inline file is created with its ``im:`` mode (0644 without one) less the
worker's umask, as Work Queue's worker creates it; a cached file is
shared by hard links, so it gets its mode less the write bits (0444 without one); a
fetched or made file is executable, as Work Queue makes it (0777 there: 0755 here, 0555
when cached).  A directory's tar carries its files' modes.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol.fields import (
    CACHED_COMMAND_FILE,
    CACHED_DIR,
    CACHED_FILE,
    CACHED_URL_FILE,
    COMMAND_FILE,
    INLINE_DIR,
    INLINE_FILE,
    INPUT_MODE,
    OUTPUT_DIR,
    OUTPUT_FILE,
    URL_FILE,
)
from ..protocol.files import parse_mode, unpack_directory
from .cache import FileCache
from .fetch import fetch_url, run_file_command

MADE_MODE = 0o755  # of a fetched URL or a file command's file (Work Queue: 0777)
_FILES = (INLINE_FILE, CACHED_FILE)
_MADE = (URL_FILE, CACHED_URL_FILE, COMMAND_FILE, CACHED_COMMAND_FILE)
_KINDS = frozenset((*_FILES, INLINE_DIR, CACHED_DIR, *_MADE))


@dataclass
class Staged:
    """What staging a task's inputs took: their bytes (as they travelled: a file's
    bytes, a directory's tar, a fetched or made file's bytes) and when it started and
    ended, microseconds since the epoch (Work Queue's ``send_input_start``/``_finish``)."""

    size: int
    start: int
    end: int


def stage_inputs(fields: Mapping[bytes, bytes], sandbox: str, files: FileCache | None) -> Staged | None:
    """Every input of the task into ``sandbox`` (made); what it took, or None for a task
    without inputs (no clock read for it).  Raises OSError (FetchError for a URL or
    command) for an input that cannot be put there, ValueError for a field that does not
    decode (another client's garbage)."""
    os.makedirs(sandbox, exist_ok=True)
    staged: Staged | None = None
    for name, data in fields.items():
        kind, colon, remote = name.decode(errors="replace").partition(":")
        kind += colon
        if kind not in _KINDS:
            continue
        if staged is None:
            staged = Staged(0, time.time_ns() // 1000, 0)
        path = os.path.join(sandbox, remote)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind in _FILES:
            mode_field = fields.get(f"{INPUT_MODE}{remote}".encode())
            mode = None if mode_field is None else parse_mode(mode_field)
            if kind == INLINE_FILE:
                _write(path, data, mode)
                staged.size += len(data)
            else:
                _needed(files).link_into(data.decode(), path, mode)
                staged.size += os.stat(path).st_size
        elif kind == INLINE_DIR:
            unpack_directory(data, path)
            staged.size += len(data)
        elif kind == CACHED_DIR:
            tar = _needed(files).path(data.decode())
            unpack_directory(tar, path)
            staged.size += os.stat(tar).st_size
        else:
            _make(kind, data.decode(), path, sandbox, _needed(files))
            staged.size += os.stat(path).st_size
    if staged is not None:
        staged.end = time.time_ns() // 1000
    return staged


_TRANSFER = '{"in":%d,"out":%d,"in_start":%d,"in_end":%d,"out_start":%d,"out_end":%d}'  # JSON, one C-level format


def transfer_field(staged: Staged | None, collected: tuple[int, int] | None, result: Mapping[str, Any]) -> str:
    """The ``xfer`` result field of a task with files: the bytes staged in and the bytes
    of the outputs the result carries (none when it went over the result limit), and
    the four times, 0 for a phase that did not happen."""
    size_in, in_start, in_end = (0, 0, 0) if staged is None else (staged.size, staged.start, staged.end)
    out_start, out_end = collected or (0, 0)
    size_out = sum(len(v) for k, v in result.items() if k.startswith((OUTPUT_FILE, OUTPUT_DIR)))
    return _TRANSFER % (size_in, size_out, in_start, in_end, out_start, out_end)


def _needed(files: FileCache | None) -> FileCache:
    if files is None:
        raise OSError("this worker has no file cache for cached inputs")
    return files


def _write(path: str, data: bytes, mode: int | None) -> None:
    if mode is None:  # the usual file: no mode to set
        with open(path, "wb") as handle:
            handle.write(data)
        return
    # created with the mode, less the worker's umask, as Work Queue's worker creates it
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode), "wb") as handle:
        handle.write(data)


def _make(kind: str, source: str, path: str, sandbox: str, files: FileCache) -> None:
    """A URL fetched or a command run into ``path``: directly, or once into the cache
    (keyed by a digest of the URL or the command) and linked from there."""
    limit = files.item_bytes
    if kind in (URL_FILE, CACHED_URL_FILE):
        make: Callable[[str], None] = lambda target: fetch_url(source, target, limit)  # noqa: E731
    else:

        def make(target: str) -> None:
            try:
                os.unlink(target)  # the cache's placeholder: the command must make the file
            except FileNotFoundError:
                pass
            run_file_command(source, target, sandbox, limit)

    if kind in (URL_FILE, COMMAND_FILE):
        make(path)
        os.chmod(path, MADE_MODE)
        return
    key = hashlib.sha256(f"{kind}{source}".encode()).hexdigest()
    files.link(lambda: files.made(key, make, MADE_MODE), path)
