"""wq-redis: Work Queue's programming model (tasks, PythonTasks, resources, tags, wait)
on Redis.  Port a Work Queue program by changing its import::

    import wq_redis as wq
    q = wq.WorkQueue("proj")            # no URL: an embedded local Redis starts
    t = wq.PythonTask(my_sum, 10, 20)
    q.submit(t)
    t = q.wait(5)

``wq.Executor`` runs calls as a ``concurrent.futures`` executor (futures are awaitable);
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
    from .embedded.queue import Executor as Executor
    from .embedded.queue import WorkQueue as WorkQueue
    from .protocol.connection import RedisUnavailable as RedisUnavailable
    from .protocol.files import FileTooLarge as FileTooLarge
    from .protocol.serialize import EnvelopeError as EnvelopeError

# public name -> the module that defines it
_EXPORTS = {
    "WorkQueue": "embedded.queue",
    "Executor": "embedded.queue",
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
    "EnvelopeError": "protocol.serialize",
    "FileTooLarge": "protocol.files",
}


def _work_queue_names() -> list[str]:
    from .client import codes

    return [name for name in vars(codes) if name.startswith("WORK_QUEUE_")]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    elif name.startswith("WORK_QUEUE_"):
        module = importlib.import_module(".client.codes", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_work_queue_names()))


__all__ = sorted(_EXPORTS) + ["__version__"] + _work_queue_names()
