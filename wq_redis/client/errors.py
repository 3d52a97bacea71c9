"""Errors of finished tasks, as Python programs expect to see them raised.

A PythonTask whose function raised comes back with the exception as its ``output`` and
the worker's traceback in its ``std_output``; helpers that raise (``Executor``'s futures,
``tree_reduce``) re-raise that exception with the remote traceback chained as its cause,
the way ``concurrent.futures.ProcessPoolExecutor`` shows a child's traceback.
"""

from __future__ import annotations

from ..protocol.codes import Result
from .task import PythonTaskNoResult, Task

TRACEBACK_HEADER = "Traceback (most recent call last):"


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a worker (chained as ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text.rstrip() + "\n"


class TaskFailed(PythonTaskNoResult):
    """A task failed as a task (worker lost, retries spent, time limit, cancelled...)."""

    def __init__(self, message: str, task: Task | None = None) -> None:
        super().__init__(message)
        self.task = task
        self.result = task.result if task is not None else None


def remote_traceback(output: str | None) -> str | None:
    """The last traceback printed in a task's output, if any."""
    if not output or TRACEBACK_HEADER not in output:
        return None
    return output[output.rindex(TRACEBACK_HEADER) :]


def task_exception(task: Task) -> BaseException | None:
    """What to raise for a finished PythonTask, or None when it returned a value.

    The function's own exception (with the worker's traceback as its cause), else a
    ``TaskFailed`` when the task did not run to completion.
    """
    if task.result != Result.SUCCESS:
        reason = task.error or task.result_str or "no result"
        return TaskFailed(f"task {task.id} failed: {task.result_str}: {reason}", task)
    if not task.return_status:
        return None
    output = task.output
    if not isinstance(output, BaseException):
        return TaskFailed(f"task {task.id} failed with status {task.return_status}: {task.error or ''}", task)
    text = remote_traceback(task.std_output)
    if text and output.__cause__ is None:
        output.__cause__ = RemoteTraceback(text)
        try:
            output.remote_traceback = text  # type: ignore[attr-defined]  # ours, on the user's exception
        except AttributeError:  # exceptions with __slots__
            pass
    return output
