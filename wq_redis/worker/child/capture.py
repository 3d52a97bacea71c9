"""A warm child's captured output: fds 1 and 2 of the process, for a call's ``std_output``
(output of C extensions and of subprocesses the function starts included)."""

from __future__ import annotations

import os
import sys
from typing import IO

from .limits import MAX_STDOUT_BYTES


class Capture:
    """Where fds 1 and 2 point for the child's whole life: one temporary file (emptied at
    the start of a message once it holds a megabyte), so a call's output (of C extensions
    and of subprocesses it starts too) is the file's bytes between two offsets.  Redirected once instead of per
    call: saving, pointing and restoring the two descriptors cost ten system calls a call.
    """

    TRUNCATE_BYTES = 1 << 20  # the file is emptied when a message starts past this much

    def __init__(self) -> None:
        self.file = _unnamed_file()
        self.fd = self.file.fileno()
        self.reset()

    def reset(self) -> int:
        """Point fds 1 and 2 here again (a task may have closed or moved them) and return
        where this message's output starts: after earlier output (of the last message, or
        of a stray background process), which is cut only once the file grew large (a
        truncate per message was a tenth of a one-task round trip)."""
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)
        start = self.offset()  # what an earlier task left buffered lands before the start
        if start > self.TRUNCATE_BYTES:
            os.ftruncate(self.fd, 0)
            start = os.lseek(self.fd, 0, os.SEEK_SET)
        return start

    def offset(self) -> int:
        """Where the next output lands (after what Python still buffered)."""
        flush_streams()
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def between(self, start: int, end: int) -> bytes:
        """The output written between two offsets, cut at MAX_STDOUT_BYTES."""
        data = os.pread(self.fd, min(end - start, MAX_STDOUT_BYTES + 1), start) if end > start else b""
        if len(data) > MAX_STDOUT_BYTES:
            data = data[:MAX_STDOUT_BYTES] + b"\n[wq-redis: output truncated at 16 MiB]\n"
        return data


def flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the task closed it (or its file descriptor)
            pass


def _unnamed_file() -> IO[bytes]:
    """An unnamed file in the temporary directory (O_TMPFILE: nothing to clean up).
    ``tempfile`` only where that fails: with shutil and random it was 2 ms of the child's
    start (``python -X importtime -m wq_redis.worker.child``)."""
    try:
        return open(os.open(os.environ.get("TMPDIR") or "/tmp", os.O_TMPFILE | os.O_RDWR, 0o600), "r+b", buffering=0)
    except OSError:  # no such directory, or a file system without O_TMPFILE
        import tempfile

        return tempfile.TemporaryFile()
