"""Waiting for a child without polling: its fd (pidfd or socket), a cancel pipe, a deadline."""

from __future__ import annotations

import os
import select


class CancelSignal:
    """A pipe another thread writes to, to wake a runner blocked in ``wait_readable``."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.is_set = False

    def set(self) -> None:
        if not self.is_set:
            self.is_set = True
            os.write(self.write_fd, b"x")

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


def wait_readable(fd: int, cancel_fd: int, timeout: float | None) -> bool:
    """True when ``fd`` is readable (or closed); False when cancelled or ``timeout`` passed."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    poller.register(cancel_fd, select.POLLIN)
    events = dict(poller.poll(None if timeout is None else max(0.0, timeout) * 1000))
    return fd in events and cancel_fd not in events
