"""Result codes and task states as they are written into Redis: Work Queue's names and
values, so a result a worker records is the number a ported program compares with.  The
``WORK_QUEUE_*`` spellings of them are client/codes.py.
"""

from __future__ import annotations

import enum


class Result(enum.IntEnum):
    """``task.result``: how a task ended (Work Queue's ``work_queue_result_t``)."""

    SUCCESS = 0
    INPUT_MISSING = 1
    OUTPUT_MISSING = 2
    STDOUT_MISSING = 4
    SIGNAL = 8
    RESOURCE_EXHAUSTION = 16
    TASK_TIMEOUT = 24
    UNKNOWN = 32
    FORSAKEN = 40
    MAX_RETRIES = 48
    TASK_MAX_RUN_TIME = 56
    DISK_ALLOC_FULL = 64
    RMONITOR_ERROR = 72
    OUTPUT_TRANSFER_ERROR = 80


class TaskState(enum.IntEnum):
    """``WorkQueue.task_state(id)`` (Work Queue's ``work_queue_task_state_t``)."""

    UNKNOWN = 0
    READY = 1
    RUNNING = 2
    WAITING_RETRIEVAL = 3
    RETRIEVED = 4
    DONE = 5
    CANCELED = 6


def result_str(code: int | None) -> str | None:
    """Name of a result code as Work Queue prints it (``"SUCCESS"``), None before a result."""
    if code is None:
        return None
    try:
        return Result(code).name
    except ValueError:
        return "UNKNOWN"
