"""wq-redis: Work Queue's programming model (tasks, PythonTasks, resources, tags, wait)
on Redis.  Port a Work Queue program by changing its import::

    import wq_redis as wq
    q = wq.WorkQueue("proj")            # no URL: an embedded local Redis starts
    t = wq.PythonTask(my_sum, 10, 20)
    q.submit(t)
    t = q.wait(5)

``wq.Executor`` runs calls as a ``concurrent.futures`` executor (futures are awaitable);
``wq-redis status`` shows queues, workers, tasks and categories.
"""

__version__ = "0.1.0"

from .codes import *  # noqa: E402,F401,F403  (Work Queue's WORK_QUEUE_* names)
from .codes import Result, TaskState, result_str  # noqa: E402
from .errors import RemoteTraceback, TaskFailed  # noqa: E402
from .executor import Executor, TaskFuture  # noqa: E402
from .files import FileTooLarge  # noqa: E402
from .connection import RedisUnavailable  # noqa: E402
from .manager import WorkQueue  # noqa: E402
from .serialize import EnvelopeError  # noqa: E402
from .stats import Stats  # noqa: E402
from .task import PythonTask, PythonTaskNoResult, Resources, Task  # noqa: E402

__all__ = [
    "WorkQueue", "Task", "PythonTask", "PythonTaskNoResult", "Resources", "Stats", "Result", "TaskState",
    "result_str", "RedisUnavailable", "EnvelopeError", "Executor", "TaskFuture", "TaskFailed", "RemoteTraceback",
    "FileTooLarge", "__version__",
] + [name for name in dir() if name.startswith("WORK_QUEUE_")]
