"""The task bodies every system runs (wq-redis and the hand-written queue import these;
huey and Celery wrap the same bodies in their decorators, RQ enqueues them by name)."""

from __future__ import annotations

import os
import time


def noop(*_args: object) -> None:
    """The no-op task: measures the queue, not the work."""
    return None


def echo(data: bytes) -> bytes:
    """1 MiB in, the same 1 MiB out."""
    return data


def whoami(delay: float = 0.0) -> int:
    """The worker's pid (after ``delay`` s): warm-up waits until every worker has answered."""
    if delay:
        time.sleep(delay)
    return os.getpid()
