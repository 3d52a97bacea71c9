"""Work Queue's result codes and task states, with the same names and values.

Ported programs compare ``task.result`` with ``wq.WORK_QUEUE_RESULT_SUCCESS`` and call
``q.task_state(id) == wq.WORK_QUEUE_TASK_RUNNING``; both spellings work here.
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


WORK_QUEUE_RESULT_SUCCESS = Result.SUCCESS
WORK_QUEUE_RESULT_INPUT_MISSING = Result.INPUT_MISSING
WORK_QUEUE_RESULT_OUTPUT_MISSING = Result.OUTPUT_MISSING
WORK_QUEUE_RESULT_STDOUT_MISSING = Result.STDOUT_MISSING
WORK_QUEUE_RESULT_SIGNAL = Result.SIGNAL
WORK_QUEUE_RESULT_RESOURCE_EXHAUSTION = Result.RESOURCE_EXHAUSTION
WORK_QUEUE_RESULT_TASK_TIMEOUT = Result.TASK_TIMEOUT
WORK_QUEUE_RESULT_UNKNOWN = Result.UNKNOWN
WORK_QUEUE_RESULT_FORSAKEN = Result.FORSAKEN
WORK_QUEUE_RESULT_MAX_RETRIES = Result.MAX_RETRIES
WORK_QUEUE_RESULT_TASK_MAX_RUN_TIME = Result.TASK_MAX_RUN_TIME
WORK_QUEUE_RESULT_DISK_ALLOC_FULL = Result.DISK_ALLOC_FULL
WORK_QUEUE_RESULT_RMONITOR_ERROR = Result.RMONITOR_ERROR
WORK_QUEUE_RESULT_OUTPUT_TRANSFER_ERROR = Result.OUTPUT_TRANSFER_ERROR

WORK_QUEUE_TASK_UNKNOWN = TaskState.UNKNOWN
WORK_QUEUE_TASK_READY = TaskState.READY
WORK_QUEUE_TASK_RUNNING = TaskState.RUNNING
WORK_QUEUE_TASK_WAITING_RETRIEVAL = TaskState.WAITING_RETRIEVAL
WORK_QUEUE_TASK_RETRIEVED = TaskState.RETRIEVED
WORK_QUEUE_TASK_DONE = TaskState.DONE
WORK_QUEUE_TASK_CANCELED = TaskState.CANCELED

WORK_QUEUE_INPUT = 0  # specify_file / specify_directory: the type of a file
WORK_QUEUE_OUTPUT = 1
WORK_QUEUE_NOCACHE = 0  # specify_file / specify_directory: flags
WORK_QUEUE_CACHE = 1

WORK_QUEUE_WAITFORTASK = -1  # wait(timeout=WORK_QUEUE_WAITFORTASK) waits forever
WORK_QUEUE_DEFAULT_PORT = 9123  # accepted and ignored: workers find the queue through Redis
