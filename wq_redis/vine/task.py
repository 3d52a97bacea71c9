"""TaskVine's ``Task`` and ``PythonTask`` over the engine's (client/task.py).

As in TaskVine, where the Python object wraps the C ``vine_task``, a ``vine.Task`` holds
an engine task (``_task``) and translates: ``set_cores`` is ``specify_cores``,
``add_input`` of a declared file is ``specify_input_file`` / ``specify_buffer`` /
``specify_url``, ``exit_code`` is ``return_status``, and ``result`` is TaskVine's
string (``"success"``, ``"max wall time"``) of the engine's result code.  Outputs are
registered at submit time (``_finalize``), as TaskVine does, because an output buffer
needs the manager's staging directory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..client.codes import WORK_QUEUE_OUTPUT
from ..client.task import PythonTask as EnginePythonTask
from ..client.task import PythonTaskNoResult, Resources
from ..client.task import Task as EngineTask
from .codes import VINE_BUFFER, VINE_FILE, VINE_TASK_DONE, VINE_TASK_INITIAL, VINE_URL, VineResult, from_engine
from .files import File, cache_level

if TYPE_CHECKING:
    from .manager import Manager

__all__ = ["FunctionCall", "LibraryTask", "PythonTask", "PythonTaskNoResult", "Task"]

# Task(command, **task_info): the keys TaskVine sets through set_<key>
_SETTERS = (
    "library_required", "library_provided", "scheduler", "tag", "category", "snapshot_file", "retries", "cores",
    "memory", "disk", "gpus", "priority", "time_end", "time_start", "time_max", "time_min", "monitor_output",
)  # fmt: skip

_SERVERLESS = (
    "serverless execution (LibraryTask, FunctionCall, libraries) is not available in wq-redis: "
    "use PythonTask, whose workers keep warm Python processes, or wq_redis.Executor"
)


def _ignored(what: str, why: str) -> None:
    warnings.warn(f"{what} has no effect in wq-redis: {why}", stacklevel=3)


class Task:
    """A command line run on a worker: TaskVine's ``vine.Task``.

    >>> t = vine.Task("wc -l < data.txt", cores=1, tag="count")
    >>> t.add_input(m.declare_file("data.txt"), "data.txt")
    >>> m.submit(t)
    """

    def __init__(self, command: str, **task_info: Any) -> None:
        if isinstance(command, dict):
            raise TypeError(f"{command} is not a str. Did you mean **{command}?")
        self._start(self._engine_task(command))
        for key in _SETTERS:
            if key in task_info:
                getattr(self, f"set_{key}")(task_info[key])
        features = task_info.get("features", [])
        for feature in [features] if isinstance(features, str) else features:
            self.add_feature(feature)
        for key, add in (("inputs", self.add_input), ("outputs", self.add_output)):
            for file, value in task_info.get(key, {}).items():
                if not isinstance(file, File):
                    raise TypeError(f"{file} is not a TaskVine file")
                if not isinstance(value, (str, dict)):
                    raise TypeError(f"{value} is not a str or dict")
                add(file, **({"remote_name": value} if isinstance(value, str) else value))
        for name, value in task_info.get("env", {}).items():
            self.set_env_var(name, value)

    def _start(self, engine: EngineTask) -> None:
        self._task = engine
        self._outputs: list[tuple[File, str]] = []
        self._outputs_finalized = False
        self._staged: list[tuple[File, str, str]] = []  # output buffers: (file, remote name, staged path)
        self._returned = False  # handed back by Manager.wait
        self._cancelled = False
        self._manager: Manager | None = None

    @classmethod
    def _around(cls, engine: EngineTask) -> Task:
        """A vine task for an engine task it did not build (one adopted after a restart)."""
        task = cls.__new__(cls)
        task._start(engine)
        return task

    def _engine_task(self, command: str) -> EngineTask:
        return EngineTask(command)

    @property
    def manager(self) -> Manager | None:
        return self._manager

    # -- what the task is --------------------------------------------------------------
    def set_command(self, command: str) -> None:
        self._task.specify_command(command)

    def set_tag(self, tag: str) -> None:
        self._task.specify_tag(tag)

    def set_category(self, name: str) -> None:
        self._task.specify_category(name)

    def add_feature(self, name: str) -> None:
        """Run only on workers that offer ``name`` (workers' ``--tags``, as Work Queue's features)."""
        self._task.specify_feature(name)

    def set_priority(self, priority: float) -> None:
        self._task.specify_priority(priority)

    def set_cores(self, cores: int) -> None:
        self._task.specify_cores(cores)

    def set_memory(self, memory: int) -> None:
        """Memory in MB."""
        self._task.specify_memory(memory)

    def set_disk(self, disk: int) -> None:
        """Sandbox disk in MB."""
        self._task.specify_disk(disk)

    def set_gpus(self, gpus: int) -> None:
        self._task.specify_gpus(gpus)

    def set_env_var(self, name: str, value: str | None = None) -> None:
        """Set ``name`` for the task; ``None`` unsets it."""
        self._task.specify_environment_variable(name, value)

    # -- retries and time ----------------------------------------------------------------
    def set_retries(self, max_retries: int) -> None:
        """Attempts after the first; less than 1 (TaskVine's default) tries indefinitely."""
        self._task.specify_max_retries(max(0, int(max_retries)))

    def set_max_forsaken(self, max_forsaken: int) -> None:
        _ignored("set_max_forsaken()", "a task is given back to the queue by a lost worker, limited by set_retries")

    def set_time_max(self, seconds: float) -> None:
        """Kill the task after this many seconds of running; less than 1: no limit."""
        limit = int(seconds)
        self._task.specify_running_time_max(limit if limit >= 1 else 0)

    def set_time_end(self, useconds: float) -> None:
        """Absolute deadline in microseconds since the epoch; less than 1: none."""
        end = int(useconds)
        self._task.specify_end_time(end if end >= 1 else 0)

    def set_time_start(self, useconds: float) -> None:
        self._task.specify_start_time_min(int(useconds))

    def set_time_min(self, seconds: float) -> None:
        self._task.specify_running_time_min(int(seconds))

    def set_scheduler(self, scheduler: str) -> None:
        _ignored("set_scheduler()", "workers choose the tasks that fit them")

    def set_monitor_output(self, directory: str) -> None:
        self._task.specify_monitor_output(directory)

    def set_snapshot_file(self, filename: str) -> None:
        self._task.specify_snapshot_file(filename)

    # -- serverless: not here --------------------------------------------------------------
    def set_library_required(self, library: Any) -> None:
        raise NotImplementedError(_SERVERLESS)

    set_library_provided = needs_library = provides_library = set_library_required

    # -- files -------------------------------------------------------------------------------
    def add_input(self, file: File, remote_name: str, strict_input: bool = False, mount_symlink: bool = False) -> None:
        """Place ``file`` in the sandbox as ``remote_name`` (a copy; ``mount_symlink`` changes
        nothing a task can see but the link)."""
        if not isinstance(remote_name, str):
            raise TypeError(f"remote_name {remote_name} is not a str")
        if not isinstance(file, File):
            raise TypeError(f"{file!r} is not a TaskVine file (use Manager.declare_file, declare_buffer, declare_url)")
        if strict_input:
            raise NotImplementedError(
                "strict_input is not available in wq-redis: workers do not advertise their caches"
            )
        kind, where, cache = file.type(), file.source(), file._cache
        if kind == VINE_FILE:
            assert where is not None
            if os.path.isdir(where):
                self._task.specify_directory(where, remote_name, recursive=True, cache=cache)
            else:
                self._task.specify_input_file(where, remote_name, cache=cache)
        elif kind == VINE_BUFFER:
            if file._data is None:
                raise ValueError("this buffer has no contents yet: an output buffer is an input once its task is back")
            self._task.specify_buffer(file._data, remote_name, cache=cache)
        elif kind == VINE_URL:
            assert where is not None  # declare_url always names its URL
            self._task.specify_url(where, remote_name, cache=cache)
        else:
            raise ValueError(f"invalid file description {file!r}")

    def add_output(
        self,
        file: File,
        remote_name: str,
        watch: bool = False,
        failure_only: bool | None = None,
        success_only: bool | None = None,
    ) -> None:
        """Bring ``remote_name`` back into ``file`` (a local file or directory, or a buffer)
        when the task is done."""
        if not isinstance(remote_name, str):
            raise TypeError(f"remote_name {remote_name} is not a str")
        if not isinstance(file, File) or file.type() not in (VINE_FILE, VINE_BUFFER):
            raise TypeError(f"{file!r} cannot be an output: declare it with declare_file or declare_buffer")
        if watch or failure_only or success_only:
            raise NotImplementedError(
                "watch, failure_only and success_only outputs are not available in wq-redis: "
                "every output comes back once, when the task is done"
            )
        self._outputs.append((file, remote_name))

    def _finalize(self, manager: Manager) -> None:
        """Register the outputs with the engine task (once: a returned task may be resubmitted)."""
        self._manager = manager
        self._returned = self._cancelled = False
        if self._outputs_finalized:
            return
        for file, remote in self._outputs:
            local = file.source()
            if file.type() == VINE_BUFFER:
                staged = manager._stage_path()
                self._staged.append((file, os.path.normpath(remote), staged))
                self._task.specify_output_file(staged, remote)
            elif local is not None and (os.path.isdir(local) or remote.endswith("/")):
                self._task.specify_directory(local, remote.rstrip("/"), type=WORK_QUEUE_OUTPUT)
            else:
                assert local is not None
                self._task.specify_output_file(local, remote)
        self._outputs_finalized = True

    def _collect(self) -> None:
        """The task came back: fill its output buffers (their staged copies are removed)."""
        self._returned = True
        produced = self._task.output_files
        for file, remote, staged in self._staged:
            if remote in produced:
                file._data = produced[remote]
            try:
                os.unlink(staged)
            except FileNotFoundError:
                pass

    # -- after submit -------------------------------------------------------------------
    @property
    def id(self) -> int | None:
        return self._task.id

    @property
    def tag(self) -> str | None:
        return self._task.tag

    @property
    def category(self) -> str:
        return self._task.category

    @property
    def command(self) -> str:
        return self._task.command

    @property
    def state(self) -> int:
        """A ``VINE_TASK_*`` state."""
        if self._returned:
            return VINE_TASK_DONE
        if self._manager is None or self.id is None:
            return VINE_TASK_INITIAL
        return self._manager.task_state(self.id)

    # -- after completion -----------------------------------------------------------------
    def _result_code(self) -> VineResult:
        if self._cancelled:
            return VineResult.CANCELLED
        code = self._task.result
        return VineResult.UNKNOWN if code is None else from_engine(code)

    @property
    def result(self) -> str:
        """TaskVine's result string: ``"success"``, ``"input missing"``, ``"max wall time"``,
        ``"cancelled"``...; ``"unknown"`` before the task is back."""
        from .codes import result_text

        return result_text(self._result_code())

    def completed(self) -> bool:
        """The command ran to its end (its ``exit_code`` may still be non-zero)."""
        return self.result == "success"

    def successful(self) -> bool:
        """Completed with exit code 0 and every output produced."""
        return self.completed() and self.exit_code == 0

    @property
    def exit_code(self) -> int:
        """The command's exit status (the signal's number when killed); -1 when it never ran."""
        if self._cancelled:
            return -1
        status = self._task.return_status
        return -1 if status is None else status

    @property
    def std_output(self) -> str | None:
        return self._task.std_output

    @property
    def output(self) -> Any:
        return self._task.std_output

    @property
    def hostname(self) -> str | None:
        return self._task.hostname

    @property
    def addrport(self) -> str | None:
        """The worker that ran the task (workers have no address of their own here)."""
        return self._task.worker

    @property
    def resources_measured(self) -> Resources:
        return self._task.resources_measured

    @property
    def resources_requested(self) -> Resources:
        return self._task.resources_requested

    @property
    def resources_allocated(self) -> Resources:
        return self._task.resources_allocated

    @property
    def limits_exceeded(self) -> Any:
        return getattr(self._task, "limits_exceeded", None)

    def get_metric(self, name: str) -> int:
        """TaskVine's task metrics, in microseconds; 0 for one not measured (as TaskVine answers
        an unknown name)."""
        task = self._task
        values = {
            "time_when_submitted": task.submit_time,
            "time_when_commit_start": task.execute_cmd_start,
            "time_when_done": task.finish_time,
            "time_workers_execute_last": task.cmd_execution_time,
        }
        return int(values.get(name) or 0)

    def __repr__(self) -> str:
        return f"<vine.{type(self).__name__} id={self.id} result={self.result!r}>"


class PythonTask(Task):
    """A Python function call run on a worker: ``vine.PythonTask(func, *args, **kwargs)``.

    ``output`` is the return value when the task is ``successful()``; else (the function
    raised: ``exit_code`` 1, its traceback in ``std_output``; or the task failed) a
    ``PythonTaskNoResult``, as in TaskVine.
    """

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._call = (func, args, kwargs)
        super().__init__("")

    def _engine_task(self, command: str) -> EngineTask:
        func, args, kwargs = self._call
        return EnginePythonTask(func, *args, **kwargs)

    @property
    def output(self) -> Any:
        if not self.successful():
            return PythonTaskNoResult(self._task.error or self.result)
        return self._task.output

    def set_output_cache(self, cache: Any = False) -> None:
        """Accepted: the return value comes back with the result, never stays at a worker."""
        cache_level(cache)

    def disable_temp_output(self) -> None:
        """The return value always comes back to the manager."""

    def enable_temp_output(self) -> None:
        raise NotImplementedError("temporary outputs kept at the workers are not available in wq-redis")

    def disable_output_serialization(self) -> None:
        raise NotImplementedError("return values always travel pickled (cloudpickle) in wq-redis")

    @property
    def output_file(self) -> None:
        """None: the return value is not a file (it comes back inside the result)."""
        return None


class LibraryTask(Task):
    """Not available: TaskVine's serverless libraries."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(_SERVERLESS)


class FunctionCall(Task):
    """Not available: TaskVine's serverless function calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(_SERVERLESS)
