"""Work Queue's constants under their own names: ``wq.WORK_QUEUE_RESULT_SUCCESS``,
``wq.WORK_QUEUE_TASK_RUNNING``, file types and flags.  The values are the wire's
(protocol/codes.py), so ported programs compare them with ``task.result`` unchanged:
``q.task_state(id) == wq.WORK_QUEUE_TASK_RUNNING``.
"""

from __future__ import annotations

from ..protocol.codes import Result, TaskState, result_str

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

__all__ = ["Result", "TaskState", "result_str"] + [name for name in dir() if name.startswith("WORK_QUEUE_")]
