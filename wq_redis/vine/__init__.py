"""TaskVine's Python API (``ndcctools.taskvine``) on the wq-redis engine: port a simple
TaskVine program by changing its import::

    import wq_redis.vine as vine
    m = vine.Manager(name="proj")           # no URL: an embedded local Redis starts
    t = vine.Task("echo hi"); t.set_cores(1)
    m.submit(t)
    while not m.empty():
        t = m.wait(5)
        if t: print(t.id, t.result, t.std_output)

A second face of the same engine, not a second engine: ``Manager`` is a ``wq.WorkQueue``
and a ``vine.Task`` holds a ``wq.Task``, so workers (``wq-redis worker --queue NAME``),
``wq-redis status`` and the exporter see one queue.  Serverless execution
(``LibraryTask``, ``FunctionCall``) is not available: both raise ``NotImplementedError``.
docs/porting-from-work-queue.md maps every TaskVine name.
"""

from __future__ import annotations

from .codes import *  # noqa: F403  (TaskVine's VINE_* constants)
from .codes import VineResult, vine_result_string
from .files import File
from .manager import Manager
from .stats import VineStats
from .task import FunctionCall, LibraryTask, PythonTask, PythonTaskNoResult, Task

__all__ = [
    "File", "FunctionCall", "LibraryTask", "Manager", "PythonTask", "PythonTaskNoResult", "Task", "VineResult",
    "VineStats", "vine_result_string",
    *sorted(name for name in dir() if name.startswith("VINE_")),
]  # fmt: skip
