"""wq-redis: Work Queue's programming model (tasks, PythonTasks, resources, tags, wait)
on Redis.  Port a Work Queue program by changing its import::

    import wq_redis as wq
    q = wq.WorkQueue("proj")            # no URL: an embedded local Redis starts
    t = wq.PythonTask(my_sum, 10, 20)
    q.submit(t)
    t = q.wait(5)

``wq.Factory("local", manager=q)`` starts local workers as tasks wait, as Work Queue's
factory does; ``wq.Executor`` runs calls as a ``concurrent.futures`` executor (futures are
awaitable);
``wq-redis status`` shows queues, workers, tasks and categories.

The package is layered (docs/architecture.md): ``protocol`` (the Redis contract),
``client`` (this API), ``worker``, ``embedded`` (a local Redis and local workers) and
``ops`` (command line, status, exporter).  The names below are imported on first use, so
that a process importing only a lower layer (the worker's child that runs tasks) does not
load the client API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .protocol.version import __version__

if TYPE_CHECKING:
    from .client.codes import *  # noqa: F403  (Work Queue's WORK_QUEUE_* names)
    from .client.codes import Result as Result
    from .client.codes import TaskState as TaskState
    from .client.codes import result_str as result_str
    from .client.errors import RemoteTraceback as RemoteTraceback
    from .client.errors import TaskFailed as TaskFailed
    from .client.executor import TaskFuture as TaskFuture
    from .client.stats import Stats as Stats
    from .client.task import (
        PythonTask as PythonTask,
    )
    from .client.task import (
        PythonTaskNoResult as PythonTaskNoResult,
    )
    from .client.task import (
        Resources as Resources,
    )
    from .client.task import (
        Task as Task,
    )
    from .embedded.factory import Factory as Factory
    from .embedded.queue import Executor as Executor
    from .embedded.queue import WorkQueue as WorkQueue
    from .protocol.connection import RedisUnavailable as RedisUnavailable
    from .protocol.durability import DurabilityUnavailable as DurabilityUnavailable
    from .protocol.files import FileTooLarge as FileTooLarge
    from .protocol.serialize import EnvelopeError as EnvelopeError

# public name -> the module that defines it
_EXPORTS = {
    "WorkQueue": "embedded.queue",
    "Executor": "embedded.queue",
    "Factory": "embedded.factory",
    "Task": "client.task",
    "PythonTask": "client.task",
    "PythonTaskNoResult": "client.task",
    "Resources": "client.task",
    "Stats": "client.stats",
    "TaskFuture": "client.executor",
    "TaskFailed": "client.errors",
    "RemoteTraceback": "client.errors",
    "Result": "protocol.codes",
    "TaskState": "protocol.codes",
    "result_str": "protocol.codes",
    "RedisUnavailable": "protocol.connection",
    "DurabilityUnavailable": "protocol.durability",
    "EnvelopeError": "protocol.serialize",
    "FileTooLarge": "protocol.files",
}


# Work Queue's constants under their own names (client/codes.py)
_WORK_QUEUE_NAMES = (
    "WORK_QUEUE_RESULT_SUCCESS",
    "WORK_QUEUE_RESULT_INPUT_MISSING",
    "WORK_QUEUE_RESULT_OUTPUT_MISSING",
    "WORK_QUEUE_RESULT_STDOUT_MISSING",
    "WORK_QUEUE_RESULT_SIGNAL",
    "WORK_QUEUE_RESULT_RESOURCE_EXHAUSTION",
    "WORK_QUEUE_RESULT_TASK_TIMEOUT",
    "WORK_QUEUE_RESULT_UNKNOWN",
    "WORK_QUEUE_RESULT_FORSAKEN",
    "WORK_QUEUE_RESULT_MAX_RETRIES",
    "WORK_QUEUE_RESULT_TASK_MAX_RUN_TIME",
    "WORK_QUEUE_RESULT_DISK_ALLOC_FULL",
    "WORK_QUEUE_RESULT_RMONITOR_ERROR",
    "WORK_QUEUE_RESULT_OUTPUT_TRANSFER_ERROR",
    "WORK_QUEUE_TASK_UNKNOWN",
    "WORK_QUEUE_TASK_READY",
    "WORK_QUEUE_TASK_RUNNING",
    "WORK_QUEUE_TASK_WAITING_RETRIEVAL",
    "WORK_QUEUE_TASK_RETRIEVED",
    "WORK_QUEUE_TASK_DONE",
    "WORK_QUEUE_TASK_CANCELED",
    "WORK_QUEUE_INPUT",
    "WORK_QUEUE_OUTPUT",
    "WORK_QUEUE_NOCACHE",
    "WORK_QUEUE_CACHE",
    "WORK_QUEUE_WAITFORTASK",
    "WORK_QUEUE_DEFAULT_PORT",
    "WORK_QUEUE_ALLOCATION_MODE_FIXED",
    "WORK_QUEUE_ALLOCATION_MODE_MAX",
    "WORK_QUEUE_ALLOCATION_MODE_MIN_WASTE",
    "WORK_QUEUE_ALLOCATION_MODE_MAX_THROUGHPUT",
    "WORK_QUEUE_ALLOCATION_MODE_GREEDY_BUCKETING",
    "WORK_QUEUE_ALLOCATION_MODE_EXHAUSTIVE_BUCKETING",
    "WORK_QUEUE_ALLOCATION_MODE_DET_GREEDY_BUCKETING",
    "WORK_QUEUE_ALLOCATION_MODE_DET_EXHAUSTIVE_BUCKETING",
    "WORK_QUEUE_ALLOCATION_MODE_QUANTIZED_BUCKETING",
)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    elif name in _WORK_QUEUE_NAMES:
        module = importlib.import_module(".client.codes", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_WORK_QUEUE_NAMES))


__all__ = [*sorted(_EXPORTS), "__version__", *_WORK_QUEUE_NAMES]
