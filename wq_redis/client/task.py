"""Task and PythonTask: Work Queue's task model, with its method and attribute names.

A task is built on the manager side with ``specify_*`` calls, turned into Redis hash
fields by ``to_fields`` at submit time, and filled in from the result fields the worker
wrote when ``WorkQueue.wait`` hands it back.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import cloudpickle

from ..protocol.fields import (
    ALLOCATED,
    ATTEMPTS,
    ERROR,
    FINISHED,
    HOST,
    MEASURED,
    OUTPUT,
    OUTPUT_FILE_B,
    RESULT,
    RETURN_STATUS,
    STARTED,
    VALUE,
    WORKER,
)
from ..protocol.resources import allocation_of
from .codes import WORK_QUEUE_INPUT, WORK_QUEUE_OUTPUT, Result, result_str
from .compat import TaskCompat
from .spec import InputFile, Resources, TaskSpec, cache_flag, check_remote, non_negative
from .transfer import TaskTransfer

__all__ = ["InputFile", "PythonTask", "PythonTaskNoResult", "Resources", "Task"]


class PythonTaskNoResult(Exception):
    """``PythonTask.output`` when the task failed as a task (lost, timed out, cancelled)."""


class Task(TaskCompat, TaskTransfer):
    """A command line run on a worker, in a sandbox holding its input files.

    >>> t = Task("wc -l < data.txt > count.txt")
    >>> t.specify_input_file("data.txt"); t.specify_output_file("count.txt")
    >>> t.specify_cores(1); t.specify_tag("count")
    """

    kind = "cmd"

    def __init__(self, command: str) -> None:
        self._command = command
        self._spec = TaskSpec()
        self._id: int | None = None
        self._fields: dict[bytes, bytes] = {}
        self.submit_time: int | None = None  # microseconds, as Work Queue reports them

    # -- scheduling ------------------------------------------------------------------
    def specify_command(self, command: str) -> None:
        self._command = command

    def specify_tag(self, tag: str) -> None:
        """Label the task; workers started with ``--tags`` only take their tags."""
        self._spec.tag = str(tag)

    def specify_category(self, name: str) -> None:
        self._spec.category = str(name)

    def specify_priority(self, priority: float) -> None:
        """Higher runs first among tasks a worker can take."""
        value = float(priority)
        if not math.isfinite(value):
            raise ValueError(f"priority must be a finite number, got {priority!r}")
        self._spec.priority = value

    def specify_feature(self, name: str) -> None:
        """Work Queue's worker features are expressed as tags here."""
        self.specify_tag(name)

    # -- resources -------------------------------------------------------------------
    def specify_cores(self, cores: int) -> None:
        self._spec.cores = non_negative("cores", cores)

    def specify_memory(self, memory: int) -> None:
        """Memory in MB."""
        self._spec.memory = non_negative("memory", memory)

    def specify_disk(self, disk: int) -> None:
        """Sandbox disk in MB."""
        self._spec.disk = non_negative("disk", disk)

    def specify_gpus(self, gpus: int) -> None:
        self._spec.gpus = non_negative("gpus", gpus)

    # -- retries and time ------------------------------------------------------------
    def specify_max_retries(self, max_retries: int) -> None:
        """Attempts allowed after the first when a worker is lost; 0 means unlimited."""
        self._spec.max_retries = non_negative("max_retries", max_retries)

    def specify_running_time_max(self, seconds: float) -> None:
        """Kill the task (its whole process group) after this many seconds of running."""
        self._spec.running_time_max = float(seconds)

    def specify_end_time(self, useconds: int) -> None:
        """Absolute deadline, microseconds since the epoch (Work Queue's unit)."""
        self._spec.end_time = int(useconds)

    def specify_environment_variable(self, name: str, value: str | None = None) -> None:
        """Set ``name`` for the task; ``None`` unsets it."""
        self._spec.env[str(name)] = None if value is None else str(value)

    # -- files -----------------------------------------------------------------------
    # Signatures as in Work Queue: ``flags`` (WORK_QUEUE_CACHE or WORK_QUEUE_NOCACHE) comes
    # before ``cache``; ``cache``, when given, wins.
    def specify_input_file(
        self, local_name: str, remote_name: str | None = None, flags: int | None = None, cache: bool | None = None
    ) -> None:
        """Copy ``local_name`` into the sandbox as ``remote_name`` (read at submit time).

        With ``cache=True`` the file is stored in Redis once by content hash, and each
        worker keeps one copy in its cache for every task that uses it.
        """
        remote = remote_name or os.path.basename(local_name)
        self._spec.add("inputs", InputFile(local_name, check_remote(remote), cache_flag(flags, cache)))

    def specify_buffer(
        self, buffer: bytes | str, remote_name: str, flags: int | None = None, cache: bool | None = None
    ) -> None:
        """A file of the sandbox holding ``buffer``."""
        data = buffer.encode() if isinstance(buffer, str) else bytes(buffer)
        self._spec.add("inputs", InputFile(None, check_remote(remote_name), cache_flag(flags, cache), data))

    def specify_file_piece(
        self,
        local_name: str,
        remote_name: str | None = None,
        start_byte: int = 0,
        end_byte: int = 0,
        type: int | None = None,
        flags: int | None = None,
        cache: bool | None = None,
        failure_only: bool | None = None,
    ) -> None:
        """An input holding bytes ``start_byte`` to ``end_byte`` of ``local_name``, both
        included, as in Work Queue (so the defaults give its first byte).  The piece is read
        now and travels as a buffer.  As an output (``type=WORK_QUEUE_OUTPUT``) the whole
        file comes back, as Work Queue brings it."""
        if type == WORK_QUEUE_OUTPUT:
            self.specify_output_file(local_name, remote_name, flags, cache, failure_only)
            return
        if type not in (None, WORK_QUEUE_INPUT):
            raise ValueError(f"type must be WORK_QUEUE_INPUT or WORK_QUEUE_OUTPUT, got {type!r}")
        start, end = non_negative("start_byte", start_byte), non_negative("end_byte", end_byte)
        if end < start:
            raise ValueError(f"end_byte ({end}) is lower than start_byte ({start}) for {local_name!r}")
        with open(local_name, "rb") as handle:
            handle.seek(start)
            piece = handle.read(end - start + 1)
        self.specify_buffer(piece, remote_name or os.path.basename(local_name), flags, cache)

    def specify_output_file(
        self,
        local_name: str,
        remote_name: str | None = None,
        flags: int | None = None,
        cache: bool | None = None,
        failure_only: bool | None = None,
    ) -> None:
        """Bring ``remote_name`` back from the sandbox to ``local_name`` after the task."""
        remote = remote_name or os.path.basename(local_name)
        self._spec.add("outputs", (local_name, check_remote(remote)))

    def specify_file(
        self,
        local_name: str,
        remote_name: str | None = None,
        type: int | None = None,
        flags: int | None = None,
        cache: bool | None = None,
        failure_only: bool | None = None,
    ) -> None:
        """Work Queue's general form: ``type`` is ``WORK_QUEUE_INPUT`` (default) or
        ``WORK_QUEUE_OUTPUT``."""
        if type == WORK_QUEUE_OUTPUT:
            self.specify_output_file(local_name, remote_name, flags, cache, failure_only)
        elif type in (None, WORK_QUEUE_INPUT):
            self.specify_input_file(local_name, remote_name, flags, cache)
        else:
            raise ValueError(f"type must be WORK_QUEUE_INPUT or WORK_QUEUE_OUTPUT, got {type!r}")

    def specify_directory(
        self,
        local_name: str,
        remote_name: str | None = None,
        type: int | None = None,
        flags: int | None = None,
        recursive: bool = False,
        cache: bool | None = None,
        failure_only: bool | None = None,
    ) -> None:
        """A directory: as input, ``local_name`` is packed at submit time and unpacked in the
        sandbox as ``remote_name``, with its contents only when ``recursive`` (else empty),
        as in Work Queue; as output (``type=WORK_QUEUE_OUTPUT``), the sandbox's
        ``remote_name`` comes back, whole, to ``local_name``.

        >>> t = Task("ls data > listing.txt; mkdir out; cp data/* out/")
        >>> t.specify_directory("inputs", "data", recursive=True, cache=True)
        >>> t.specify_directory("results", "out", type=WORK_QUEUE_OUTPUT)
        """
        remote = check_remote(remote_name or os.path.basename(os.path.normpath(local_name)))
        if type == WORK_QUEUE_OUTPUT:
            self._spec.add("output_dirs", (local_name, remote))
        elif type in (None, WORK_QUEUE_INPUT):
            self._spec.add(
                "inputs",
                InputFile(local_name, remote, cache_flag(flags, cache), directory=True, recursive=bool(recursive)),
            )
        else:
            raise ValueError(f"type must be WORK_QUEUE_INPUT or WORK_QUEUE_OUTPUT, got {type!r}")

    def specify_url(
        self,
        url: str,
        remote_name: str,
        type: int | None = None,
        flags: int | None = None,
        cache: bool | None = None,
        failure_only: bool | None = None,
    ) -> None:
        """A file of the sandbox fetched by the worker from ``url`` (http, https or file),
        kept in the worker's cache for later tasks with ``cache=True`` (default: not).
        A fetch that fails ends the task as ``WORK_QUEUE_RESULT_INPUT_MISSING``, the reason
        in ``task.error``."""
        self._made_input(str(url), remote_name, type, flags, cache, url=True)

    def specify_file_command(
        self,
        cmd: str,
        remote_name: str,
        type: int | None = None,
        flags: int | None = None,
        cache: bool | None = None,
        failure_only: bool | None = None,
    ) -> None:
        """A file of the sandbox made on the worker by the shell command ``cmd``, where
        ``%%`` stands for the file's path; cached (``cache=True``) by command, and a
        command that exits non-zero ends the task as INPUT_MISSING, its output in
        ``task.error``.

        >>> t.specify_file_command("curl -sS http://example.com/data.gz | gunzip > %%", "data", cache=True)
        """
        self._made_input(str(cmd), remote_name, type, flags, cache, url=False)

    def _made_input(
        self, source: str, remote_name: str, type: int | None, flags: int | None, cache: bool | None, url: bool
    ) -> None:
        what = "specify_url" if url else "specify_file_command"
        if type == WORK_QUEUE_OUTPUT:
            raise ValueError(f"{what} does not support output files (as in Work Queue)")
        if type not in (None, WORK_QUEUE_INPUT):
            raise ValueError(f"type must be WORK_QUEUE_INPUT, got {type!r}")
        if not source:
            raise ValueError(f"{what} needs a {'URL' if url else 'command'}")
        remote = check_remote(str(remote_name))
        self._spec.add("inputs", InputFile(None, remote, cache_flag(flags, cache), source=source, url=url))

    # -- identity and request --------------------------------------------------------
    @property
    def id(self) -> int | None:
        return self._id

    @property
    def command(self) -> str:
        return self._command

    @property
    def tag(self) -> str | None:
        return self._spec.tag

    @property
    def category(self) -> str:
        return self._spec.category

    @property
    def priority(self) -> float:
        return self._spec.priority

    @property
    def max_retries(self) -> int:
        return self._spec.max_retries

    # -- results ---------------------------------------------------------------------
    def _get(self, name: str) -> bytes | None:
        return self._fields.get(name.encode())

    def _get_int(self, name: str) -> int | None:
        value = self._get(name)
        return None if value is None else int(value)

    @property
    def result(self) -> int | None:
        """A ``WORK_QUEUE_RESULT_*`` code once the task is back, else None."""
        code = self._get_int(RESULT)
        return None if code is None else Result(code)

    @property
    def result_str(self) -> str | None:
        return result_str(self.result)

    # A worker leaves out what is empty or known otherwise (worker/runner.py
    # ``result_fields``): no RETURN_STATUS for status 0, no OUTPUT for no output, no HOST when
    # it is the one in the worker's name (ALLOCATED is the claim's, written with the lease).
    @property
    def return_status(self) -> int | None:
        """Exit code of the command (or signal number when ``result`` is SIGNAL)."""
        status = self._get_int(RETURN_STATUS)
        return 0 if status is None and self._get(RESULT) is not None else status

    @property
    def std_output(self) -> str | None:
        """Standard output and error of the task."""
        out = self._get(OUTPUT)
        if out is None:
            return "" if self._get(RESULT) is not None else None
        return out.decode("utf-8", errors="replace")

    @property
    def output(self) -> Any:
        return self.std_output

    @property
    def error(self) -> str | None:
        """Why the task failed as a task (wq-redis addition; empty on success)."""
        err = self._get(ERROR)
        return None if err is None else err.decode("utf-8", errors="replace")

    @property
    def hostname(self) -> str | None:
        host = self._get(HOST)
        if host is None:
            worker = self._get(WORKER)
            return worker.decode().rpartition("@")[2] if worker and self._get(RESULT) is not None else None
        return host.decode()

    @property
    def worker(self) -> str | None:
        name = self._get(WORKER)
        return None if name is None else name.decode()

    @property
    def total_submissions(self) -> int:
        return self._get_int(ATTEMPTS) or 0

    @property
    def resources_requested(self) -> Resources:
        spec = self._spec
        return Resources(spec.cores, spec.memory, spec.disk, spec.gpus)

    @property
    def resources_allocated(self) -> Resources:
        """What the worker that ran it gave it (the box its claim computed: claim.lua);
        unknown until a worker took it."""
        box = allocation_of(self._get(ALLOCATED))
        if box is None:
            return Resources()
        return Resources(box.cores, box.memory, box.disk, box.gpus)

    @property
    def resources_measured(self) -> Resources:
        return Resources.from_json(self._get(MEASURED))

    @property
    def limits_exceeded(self) -> Resources | None:
        """The limit the task went over, as Work Queue reports it: None unless it was killed
        for it, else a ``Resources`` holding only that limit (memory in MB for
        RESOURCE_EXHAUSTION, disk in MB for DISK_ALLOC_FULL): the worker enforces what it
        gave the task (``resources_allocated``), as Work Queue's does."""
        result = self.result
        if result not in (Result.RESOURCE_EXHAUSTION, Result.DISK_ALLOC_FULL):
            return None
        if result == Result.RESOURCE_EXHAUSTION:
            memory = self.resources_allocated.memory
            return None if memory is None else Resources(memory=memory)
        disk = self.resources_allocated.disk
        return None if disk is None else Resources(disk=disk)

    @property
    def execute_cmd_start(self) -> int | None:
        """When the task started on the worker, microseconds since the epoch."""
        return self._get_int(STARTED)

    @property
    def finish_time(self) -> int | None:
        return self._get_int(FINISHED)

    @property
    def cmd_execution_time(self) -> int | None:
        start, finish = self.execute_cmd_start, self.finish_time
        return None if start is None or finish is None else finish - start

    @property
    def output_files(self) -> dict[str, bytes]:
        """Contents of the output files that came back, by remote name."""
        return {k[len(OUTPUT_FILE_B) :].decode(): v for k, v in self._fields.items() if k.startswith(OUTPUT_FILE_B)}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self._id} result={self.result_str}>"


class PythonTask(Task):
    """A Python function call run on a worker: ``PythonTask(func, *args, **kwargs)``.

    ``output`` is the return value, or the exception the function raised (its traceback
    is in ``std_output``), or a ``PythonTaskNoResult`` when the task failed as a task.
    """

    kind = "py"

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not callable(func):
            raise TypeError(f"PythonTask needs a callable, got {type(func).__name__}")
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
        super().__init__(f"python:{name}")
        self._func = func
        self._args = args
        self._kwargs = kwargs
        self._value_loaded = False
        self._value: Any = None

    @property
    def function(self) -> Callable[..., Any]:
        return self._func

    @property
    def output(self) -> Any:
        if self.result != Result.SUCCESS or self._get(VALUE) is None:
            return PythonTaskNoResult(self.error or self.result_str or "task has no result yet")
        if not self._value_loaded:
            try:
                self._value = cloudpickle.loads(self._get(VALUE))
            except Exception as exc:  # e.g. the result's class is missing on the manager
                self._value = exc
            self._value_loaded = True
        return self._value
