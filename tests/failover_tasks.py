"""Task functions of the failover tests (tests/test_sentinel.py), imported by the workers."""

from __future__ import annotations

import os
import time


def stamped_work(log_path: str, seconds: float, value: int) -> int:
    """Record each execution as "task-id start" (time.monotonic(): the same clock in every
    process of the host), then work."""
    with open(log_path, "a") as log:
        log.write(f"{os.environ.get('WQ_TASK_ID', '?')} {time.monotonic():.6f}\n")
    time.sleep(seconds)
    return value
