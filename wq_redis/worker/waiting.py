"""Watching a running task without polling Redis or busy-waiting.

The runner blocks on the task's fd (a pidfd for a command, the warm child's socket for a
PythonTask) together with a cancel pipe and the time limit.  When the queue enforces
resource limits it wakes every quarter second to measure the task's memory (RSS of its
process tree) and sandbox disk use, and stops it when they exceed what it declared.
"""

from __future__ import annotations

import enum
import os
import select
import threading
import time
from dataclasses import dataclass

from ..protocol.sizes import MB

CHECK_INTERVAL = 0.25  # seconds between resource measurements when limits are enforced


class CancelSignal:
    """A pipe another thread writes to, to wake a runner blocked in ``supervise``."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.is_set = False
        self._closed = False
        self._lock = threading.Lock()

    def set(self) -> None:
        with self._lock:  # never write to a closed (and perhaps reused) descriptor
            if not self.is_set and not self._closed:
                os.write(self.write_fd, b"x")
            self.is_set = True

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.read_fd)
                os.close(self.write_fd)


class Verdict(enum.Enum):
    DONE = "done"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    MEMORY = "memory"
    DISK = "disk"


@dataclass
class Limits:
    timeout: float | None = None  # seconds
    memory_mb: int = 0  # 0: not enforced
    disk_mb: int = 0  # 0: not enforced
    sandbox: str = ""
    baseline_rss: int = 0  # bytes the process held before the task (a warm child's own)

    @property
    def measured(self) -> bool:
        return bool(self.memory_mb or self.disk_mb)


def readable(fd: int, cancel_fd: int, timeout: float | None) -> str | None:
    """'fd' when ``fd`` is readable (or closed), 'cancel' when cancelled, None on timeout."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    poller.register(cancel_fd, select.POLLIN)
    events = dict(poller.poll(None if timeout is None else max(0.0, timeout) * 1000))
    if cancel_fd in events:
        return "cancel"
    return "fd" if fd in events else None


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    import psutil  # on the first task with a memory limit: an idle worker does without it

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def disk_usage(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def supervise(fd: int, pid: int, cancel_fd: int, limits: Limits) -> Verdict:
    """Wait until the task finishes, or say which limit (or cancel) ends it first."""
    deadline = None if limits.timeout is None else time.monotonic() + limits.timeout
    while True:
        wait = None if deadline is None else deadline - time.monotonic()
        if limits.measured:
            wait = CHECK_INTERVAL if wait is None else min(wait, CHECK_INTERVAL)
        event = readable(fd, cancel_fd, wait)
        if event == "fd":
            return Verdict.DONE
        if event == "cancel":
            return Verdict.CANCELLED
        if deadline is not None and time.monotonic() >= deadline:
            return Verdict.TIMEOUT
        if limits.memory_mb and tree_rss(pid) - limits.baseline_rss > limits.memory_mb * MB:
            return Verdict.MEMORY
        if limits.disk_mb and disk_usage(limits.sandbox) > limits.disk_mb * MB:
            return Verdict.DISK
