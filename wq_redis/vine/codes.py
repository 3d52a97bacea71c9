"""TaskVine's constants under their own names and values (``taskvine.h``), and the
translation of the engine's Work Queue result codes into them.

TaskVine renumbered some results Work Queue shares with it (Work Queue's 64 is
DISK_ALLOC_FULL, TaskVine's 64 is RMONITOR_ERROR), so a result is translated by meaning,
never by number.  TaskVine's Python ``Task.result`` is a string (``"max wall time"``):
``result_text`` gives it.
"""

from __future__ import annotations

import enum

from ..protocol.codes import Result, TaskState


class VineResult(enum.IntEnum):
    """TaskVine's ``vine_result_t``."""

    SUCCESS = 0
    INPUT_MISSING = 1
    OUTPUT_MISSING = 2
    STDOUT_MISSING = 4
    SIGNAL = 1 << 3
    RESOURCE_EXHAUSTION = 2 << 3
    MAX_END_TIME = 3 << 3
    UNKNOWN = 4 << 3
    FORSAKEN = 5 << 3
    MAX_RETRIES = 6 << 3
    MAX_WALL_TIME = 7 << 3
    RMONITOR_ERROR = 8 << 3
    OUTPUT_TRANSFER_ERROR = 9 << 3
    FIXED_LOCATION_MISSING = 10 << 3
    CANCELLED = 11 << 3
    LIBRARY_EXIT = 12 << 3
    SANDBOX_EXHAUSTION = 13 << 3
    MISSING_LIBRARY = 14 << 3


VINE_RESULT_SUCCESS = VineResult.SUCCESS
VINE_RESULT_INPUT_MISSING = VineResult.INPUT_MISSING
VINE_RESULT_OUTPUT_MISSING = VineResult.OUTPUT_MISSING
VINE_RESULT_STDOUT_MISSING = VineResult.STDOUT_MISSING
VINE_RESULT_SIGNAL = VineResult.SIGNAL
VINE_RESULT_RESOURCE_EXHAUSTION = VineResult.RESOURCE_EXHAUSTION
VINE_RESULT_MAX_END_TIME = VineResult.MAX_END_TIME
VINE_RESULT_UNKNOWN = VineResult.UNKNOWN
VINE_RESULT_FORSAKEN = VineResult.FORSAKEN
VINE_RESULT_MAX_RETRIES = VineResult.MAX_RETRIES
VINE_RESULT_MAX_WALL_TIME = VineResult.MAX_WALL_TIME
VINE_RESULT_RMONITOR_ERROR = VineResult.RMONITOR_ERROR
VINE_RESULT_OUTPUT_TRANSFER_ERROR = VineResult.OUTPUT_TRANSFER_ERROR
VINE_RESULT_FIXED_LOCATION_MISSING = VineResult.FIXED_LOCATION_MISSING
VINE_RESULT_CANCELLED = VineResult.CANCELLED
VINE_RESULT_LIBRARY_EXIT = VineResult.LIBRARY_EXIT
VINE_RESULT_SANDBOX_EXHAUSTION = VineResult.SANDBOX_EXHAUSTION
VINE_RESULT_MISSING_LIBRARY = VineResult.MISSING_LIBRARY

# vine_task_state_t
VINE_TASK_INITIAL = 0
VINE_TASK_READY = 1
VINE_TASK_RUNNING = 2
VINE_TASK_WAITING_RETRIEVAL = 3
VINE_TASK_RETRIEVED = 4
VINE_TASK_DONE = 5

# vine_file_type_t: what File.type() answers
VINE_FILE = 1
VINE_URL = 2
VINE_TEMP = 3
VINE_BUFFER = 4
VINE_MINI_TASK = 5

# vine_cache_level_t
VINE_CACHE_LEVEL_TASK = 0
VINE_CACHE_LEVEL_WORKFLOW = 1
VINE_CACHE_LEVEL_WORKER = 2
VINE_CACHE_LEVEL_FOREVER = 3

VINE_DEFAULT_PORT = 9123  # accepted and ignored: workers find the manager's queue through Redis
VINE_WAIT_FOREVER = -1

# the engine's result -> TaskVine's result of the same meaning
_FROM_ENGINE = {
    Result.SUCCESS: VineResult.SUCCESS,
    Result.INPUT_MISSING: VineResult.INPUT_MISSING,
    Result.OUTPUT_MISSING: VineResult.OUTPUT_MISSING,
    Result.STDOUT_MISSING: VineResult.STDOUT_MISSING,
    Result.SIGNAL: VineResult.SIGNAL,
    Result.RESOURCE_EXHAUSTION: VineResult.RESOURCE_EXHAUSTION,
    Result.TASK_TIMEOUT: VineResult.MAX_END_TIME,
    Result.UNKNOWN: VineResult.UNKNOWN,
    Result.FORSAKEN: VineResult.FORSAKEN,
    Result.MAX_RETRIES: VineResult.MAX_RETRIES,
    Result.TASK_MAX_RUN_TIME: VineResult.MAX_WALL_TIME,
    Result.DISK_ALLOC_FULL: VineResult.SANDBOX_EXHAUSTION,
    Result.RMONITOR_ERROR: VineResult.RMONITOR_ERROR,
    Result.OUTPUT_TRANSFER_ERROR: VineResult.OUTPUT_TRANSFER_ERROR,
}

# the engine's task state -> TaskVine's (a cancelled task is one wait() will still return)
_STATE_FROM_ENGINE = {
    TaskState.UNKNOWN: VINE_TASK_INITIAL,
    TaskState.READY: VINE_TASK_READY,
    TaskState.RUNNING: VINE_TASK_RUNNING,
    TaskState.WAITING_RETRIEVAL: VINE_TASK_WAITING_RETRIEVAL,
    TaskState.RETRIEVED: VINE_TASK_RETRIEVED,
    TaskState.DONE: VINE_TASK_DONE,
    TaskState.CANCELED: VINE_TASK_RETRIEVED,
}


def from_engine(code: int) -> VineResult:
    """TaskVine's result for a result code the engine (Work Queue's numbering) recorded."""
    try:
        return _FROM_ENGINE[Result(code)]
    except ValueError:
        return VineResult.UNKNOWN


def state_from_engine(state: int) -> int:
    return _STATE_FROM_ENGINE.get(TaskState(state), VINE_TASK_INITIAL)


def vine_result_string(code: int) -> str:
    """``vine_result_string``: the C name without its prefix (``"MAX_WALL_TIME"``), with
    TaskVine's one exception: RMONITOR_ERROR reads ``"MONITOR_ERROR"``."""
    result = VineResult(code)
    return "MONITOR_ERROR" if result is VineResult.RMONITOR_ERROR else result.name


def result_text(code: int) -> str:
    """TaskVine's Python ``Task.result``: ``"success"``, ``"input missing"``, ``"max wall time"``..."""
    return vine_result_string(code).lower().replace("_", " ")


__all__ = [name for name in dir() if name.startswith("VINE_")] + ["VineResult", "vine_result_string"]
