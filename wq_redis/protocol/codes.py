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


# ``task.return_status`` where the command's own exit does not decide it: the values Work
# Queue reports (cctools work_queue.c, work_queue_worker.c, resource_monitor.c), so a ported
# program that prints or compares them sees the same numbers.
NOT_RUN_STATUS = -1  # never started: an input missing on the manager, the end time passed while waiting, retries spent
INPUT_MISSING_STATUS = 1  # the worker could not stage an input (its stage-in failed before the command started)
KILLED_STATUS = 9  # SIGKILL's number: the worker killed it at its running time limit or end time
OVER_LIMITS_STATUS = 143  # 128 + SIGTERM: what the resource monitor reports for a task killed over its limits


class TaskState(enum.IntEnum):
    """``WorkQueue.task_state(id)`` (Work Queue's ``work_queue_task_state_t``)."""

    UNKNOWN = 0
    READY = 1
    RUNNING = 2
    WAITING_RETRIEVAL = 3
    RETRIEVED = 4
    DONE = 5
    CANCELED = 6


# ``work_queue_result_str`` (cctools work_queue.c): where its string is not the code's name
_RESULT_STRINGS = {
    Result.INPUT_MISSING: "INPUT_MISS",
    Result.OUTPUT_MISSING: "OUTPUT_MISS",
    Result.STDOUT_MISSING: "STDOUT_MISS",
    Result.TASK_TIMEOUT: "END_TIME",
    Result.TASK_MAX_RUN_TIME: "MAX_WALL_TIME",
    Result.DISK_ALLOC_FULL: "DISK_FULL",
    Result.RMONITOR_ERROR: "MONITOR_ERROR",
}


def result_str(code: int | None) -> str | None:
    """A result code as Work Queue's ``result_str`` spells it (``"SUCCESS"``, ``"INPUT_MISS"``,
    ``"MAX_WALL_TIME"``), None before a result."""
    if code is None:
        return None
    try:
        result = Result(code)
    except ValueError:
        return "UNKNOWN"
    return _RESULT_STRINGS.get(result, result.name)
