"""Running one claimed task: sandbox, inputs, execution, time limits, outputs, result fields.

Command tasks run as ``/bin/sh -c COMMAND`` (or, for a simple command, as the program
itself, exactly as the shell would: see ``command``) in their own session inside a per-task
sandbox, registered with the worker's guardian process, which kills them if the worker
dies (see ``guardian``); PythonTasks run in a warm child process (see ``pool``).  Either
way a time limit or a cancel kills the task's whole process group.  ``TaskRun.execute``
returns the hash fields ``complete.lua`` writes, or None when the task was cancelled or
its lease lost (nobody wants that result any more).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..protocol.codes import INPUT_MISSING_STATUS, KILLED_STATUS, NOT_RUN_STATUS, OVER_LIMITS_STATUS, Result
from ..protocol.fields import ARGS_B, ATTEMPTS_B, FUNCTION_B, OUTPUT_DIR, OUTPUT_FILE, OUTPUT_MODE, TRANSFER
from ..protocol.files import DEFAULT_MODE, mode_text, pack_directory, transferred_mode
from ..protocol.resources import Request
from ..protocol.serialize import EnvelopeError, worker_view
from ..protocol.signing import SignatureError, Signer
from ..protocol.sizes import MB
from ..protocol.store import TaskRefused
from .cache import FileCache
from .child.channel import out_of_band
from .child.environment import slot_environment
from .child.limits import MAX_STDOUT_BYTES
from .child.messages import RunCall
from .child.results import Outcome, named_host, result_fields
from .command import SHELL, as_shell_reports, direct_argv, shell_environment, worker_environment
from .guardian import guardian
from .pool import ChildDied, ChildGone, Interrupted, WarmPool, worker_lifeline
from .resources import GPU
from .staging import Staged, stage_inputs, transfer_field
from .waiting import CancelSignal, Limits, Verdict, disk_usage, supervise


@dataclass
class Slot:
    """What the attempts run on one slot share: its resources (the task class's), the
    worker's directory, warm children, function fetcher (bodies checked against their
    digest), result limit, signer (of results), file cache (inputs checked against theirs)."""

    allocation: Request
    gpus: list[GPU]
    workdir: str
    pool: WarmPool
    fetch_function: Callable[[str], bytes | None]
    max_result_bytes: int
    signer: Signer | None = None
    files: FileCache | None = None

    @property
    def gpu_ids(self) -> list[str]:
        return [g.device_id for g in self.gpus]

    def environment(self, sandbox: str) -> dict[str, str | None]:
        return slot_environment(self.allocation, self.gpu_ids, sandbox)


class TaskRun:
    """One attempt of one task on this worker."""

    def __init__(self, task_id: int, fields: dict[bytes, bytes], slot: Slot) -> None:
        self.task_id = task_id
        self.fields = fields
        self.slot = slot
        self.attempt = int(fields.get(ATTEMPTS_B, b"1"))
        self.sandbox = os.path.join(slot.workdir, f"t{task_id}.{self.attempt}")
        self.cancel_signal = CancelSignal()
        self.deadline_kind = Result.TASK_MAX_RUN_TIME
        self.limits = Limits(sandbox=self.sandbox)
        self.monitored = False  # the manager monitors resources (Work Queue's enable_monitoring)
        self.staged: Staged | None = None  # the inputs' bytes and times (None: no inputs)
        self.collected: tuple[int, int] | None = None  # when outputs were collected, us (None: none declared)

    def cancel(self) -> None:
        """Stop the task from another thread (lease lost or task cancelled)."""
        self.cancel_signal.set()

    def close(self) -> None:
        """Release the cancel pipe (after the worker stopped tracking this run)."""
        self.cancel_signal.close()

    @property
    def cancelled(self) -> bool:
        return self.cancel_signal.is_set

    def execute(self) -> dict[str, Any] | None:
        started = time.monotonic()
        try:
            outcome, outputs = self._run()
        finally:
            remove_sandbox(self.sandbox)
        if self.cancelled:
            return None
        return self._fields(outcome, outputs, time.monotonic() - started)

    # -- the attempt -------------------------------------------------------------------
    def _run(self) -> tuple[Outcome, dict[str, bytes]]:
        # With a secret, the claimed hash was verified as a whole before it got here
        # (``Worker._verified``): a pack's member runs with fields its pack's signature covered.
        try:
            spec, self.fields = worker_view(self.fields)
        except EnvelopeError as exc:
            return Outcome(Result.UNKNOWN, error=f"malformed task: {exc}"), {}
        limits = self._limits(spec)
        if limits.timeout is not None and limits.timeout <= 0:
            return Outcome(
                Result.TASK_TIMEOUT, NOT_RUN_STATUS, error="the task's end time passed before it started"
            ), {}
        try:
            self._stage_inputs()
        except OSError as exc:
            return Outcome(Result.INPUT_MISSING, INPUT_MISSING_STATUS, error=f"cannot stage input files: {exc}"), {}
        except Exception as exc:  # a field that does not decode (a digest, a tar): another client's garbage
            return Outcome(Result.INPUT_MISSING, INPUT_MISSING_STATUS, error=f"cannot stage input files: {exc!r}"), {}
        env = self._environment(spec.get("env") or {})
        if spec["kind"] == "py":
            outcome = self._run_python(env, limits)
        else:
            outcome = self._run_command(spec["command"], env, limits)
        return outcome, self._collect_outputs(spec, outcome)

    def _limits(self, spec: dict[str, Any]) -> Limits:
        """Time limits always; memory and disk only when the manager enforces them (Work
        Queue's monitoring), and then what the task was given: its box (claim.lua)."""
        deadlines = []
        if spec.get("running_time_max"):
            deadlines.append((float(spec["running_time_max"]), Result.TASK_MAX_RUN_TIME))
        if spec.get("end_time"):
            deadlines.append((spec["end_time"] / 1e6 - time.time(), Result.TASK_TIMEOUT))
        limits = Limits(sandbox=self.sandbox)
        if deadlines:
            limits.timeout, self.deadline_kind = min(deadlines)
        if spec.get("enforce"):
            self.monitored = True
            limits.memory_mb, limits.disk_mb = self.slot.allocation.memory, self.slot.allocation.disk
        self.limits = limits
        return limits

    def _stage_inputs(self) -> None:
        """Files, directories, URLs and file commands into the sandbox (staging.py)."""
        self.staged = stage_inputs(self.fields, self.sandbox, self.slot.files)

    def _environment(self, task_env: dict[str, str | None]) -> dict[str, str | None]:
        """The slot's variables (``Slot.environment``), the task id, then the task's own."""
        env = self.slot.environment(self.sandbox)
        env["WQ_TASK_ID"] = str(self.task_id)
        env.update(task_env)
        return env

    def _run_command(self, command: str, task_env: dict[str, str | None], limits: Limits) -> Outcome:
        merged: dict[str, str | None] = {**worker_environment(), **task_env}
        env = {k: v for k, v in merged.items() if v is not None}
        if not self.slot.gpus and self.slot.pool.hide_gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""
        guard = guardian(worker_lifeline())
        guard.expect(self.sandbox)  # before the fork: see guardian.py
        try:
            with _stdout_file() as stdout:
                process, direct = self._start_command(command, env, stdout)
                guard.started(self.sandbox, process.pid)
                pidfd = os.pidfd_open(process.pid)
                try:
                    verdict = supervise(pidfd, process.pid, self.cancel_signal.read_fd, limits)
                finally:
                    os.close(pidfd)
                _kill_group(process.pid)  # leftovers too: a task leaves nothing running behind
                _, status, usage = os.wait4(process.pid, 0)
                process.returncode = os.waitstatus_to_exitcode(status)
                size = os.fstat(stdout.fileno()).st_size
                output = os.pread(stdout.fileno(), min(size, MAX_STDOUT_BYTES), 0) if size else b""
        finally:
            guard.finished(self.sandbox)
        cpu, rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024
        # the sandbox's size, as Work Queue's resource monitor reports it, when the manager monitors
        disk = -(-disk_usage(self.sandbox) // MB) if self.monitored else -1
        if verdict is not Verdict.DONE:
            result, status, message = self._interruption(verdict)
            return Outcome(result, status, output, message, None, cpu, rss, disk)
        if direct:  # report what the shell would have: see command.py
            code, said = as_shell_reports(status)
            output = (output + said)[:MAX_STDOUT_BYTES]
        else:
            code = process.returncode
        if code < 0:
            return Outcome(Result.SIGNAL, -code, output, f"killed by signal {-code}", None, cpu, rss, disk)
        return Outcome(Result.SUCCESS, code, output, "", None, cpu, rss, disk)

    def _start_command(self, command: str, env: dict[str, str], stdout: Any) -> tuple[subprocess.Popen[bytes], bool]:
        """The task's process, in its own session: the program itself when the command is
        simple (no shell needed, see command.py), else ``/bin/sh -c COMMAND``; and which."""
        direct = direct_argv(command, env, self.sandbox)
        if direct is not None:
            program, argv = direct
            try:
                return subprocess.Popen(
                    argv,
                    executable=program,
                    cwd=self.sandbox,
                    env=shell_environment(env, self.sandbox),
                    stdout=stdout,
                    stderr=subprocess.STDOUT,
                    stdin=_devnull(),
                    start_new_session=True,
                ), True
            except OSError:
                pass  # not found, not executable...: the shell says so, in its words
        return subprocess.Popen(
            [SHELL, "-c", command, "wq-task"],
            cwd=self.sandbox,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=_devnull(),
            start_new_session=True,
        ), False

    def _run_python(self, env: dict[str, str | None], limits: Limits) -> Outcome:
        digest = self.fields.get(FUNCTION_B, b"").decode()
        message = RunCall(digest, None, out_of_band(self.fields.get(ARGS_B, b"")), env, self.sandbox)
        try:
            outcome = self.slot.pool.call_with_child(
                self.slot.gpu_ids,
                lambda proc: proc.call(
                    message, limits, self.cancel_signal.read_fd, lambda: self.slot.fetch_function(digest)
                ),
            )
        except ChildGone:
            return Outcome(Result.UNKNOWN, error="could not start a Python process for the task")
        except SignatureError as exc:  # the function body is not the one the task names
            return Outcome(Result.UNKNOWN, error=f"refused: {exc}")
        except TaskRefused as exc:  # its function over --max-task-bytes, or its key another client's garbage
            return Outcome(exc.result, error=str(exc))
        except Interrupted as exc:
            result, status, text = self._interruption(exc.verdict)
            return Outcome(result, status, b"", text)
        except ChildDied as exc:
            status = -exc.returncode if exc.returncode < 0 else exc.returncode
            return Outcome(Result.SIGNAL, status, b"", str(exc))
        return outcome

    def _interruption(self, verdict: Verdict) -> tuple[Result, int, str]:
        """Result code, return status and message of a task stopped before it finished: the
        status is Work Queue's (protocol/codes.py): 9 for a time limit (its worker SIGKILLs
        the task), 143 for a task over its memory or disk (its resource monitor's value)."""
        limits = self.limits
        if verdict is Verdict.CANCELLED:
            return Result.UNKNOWN, NOT_RUN_STATUS, "cancelled"  # nobody is told: the result is dropped
        if verdict is Verdict.MEMORY:
            message = f"used more than its {limits.memory_mb} MB of memory; it was killed"
            return Result.RESOURCE_EXHAUSTION, OVER_LIMITS_STATUS, message
        if verdict is Verdict.DISK:
            return (
                Result.DISK_ALLOC_FULL,
                OVER_LIMITS_STATUS,
                f"wrote more than its {limits.disk_mb} MB of disk; it was killed",
            )
        if self.deadline_kind == Result.TASK_TIMEOUT:
            return Result.TASK_TIMEOUT, KILLED_STATUS, "the task's end time passed; it was killed"
        message = f"ran past its running time limit of {limits.timeout:g} s; it was killed"
        return Result.TASK_MAX_RUN_TIME, KILLED_STATUS, message

    def _collect_outputs(self, spec: dict[str, Any], outcome: Outcome) -> dict[str, bytes]:
        """Result fields of the output files (``o:NAME``) and directories (``od:NAME``),
        and when collecting them started and ended (``collected``; only for a task that
        declares outputs: the clock is not read for others)."""
        outputs: dict[str, bytes] = {}
        files, dirs = spec.get("outputs", []), spec.get("output_dirs", [])
        if not files and not dirs:
            return outputs
        start = time.time_ns() // 1000
        missing = []
        for _local, remote in files:
            try:
                with open(os.path.join(self.sandbox, remote), "rb") as handle:
                    outputs[OUTPUT_FILE + remote] = handle.read(self.slot.max_result_bytes + 1)
                    mode = transferred_mode(os.fstat(handle.fileno()).st_mode)
            except OSError:
                missing.append(remote)
                continue
            if mode != DEFAULT_MODE:  # the manager writes it with these bits (wire.apply_results)
                outputs[OUTPUT_MODE + remote] = mode_text(mode).encode()
        for _local, remote in dirs:
            try:
                outputs[OUTPUT_DIR + remote] = pack_directory(
                    os.path.join(self.sandbox, remote), max_file_bytes=self.slot.max_result_bytes
                )
            except (OSError, ValueError):  # absent, unreadable, or a file past the result limit
                missing.append(remote + "/")
        if missing and outcome.result == Result.SUCCESS:
            outcome.result = Result.OUTPUT_MISSING
            outcome.error = f"output file(s) not produced: {', '.join(missing)}"
        self.collected = (start, time.time_ns() // 1000)
        return outputs

    # -- the result ----------------------------------------------------------------------
    def _fields(self, outcome: Outcome, outputs: dict[str, bytes], wall: float) -> dict[str, Any]:
        fields = result_fields(
            self.task_id, outcome, outputs, wall, self.slot.max_result_bytes, self.slot.signer, named_host(self.fields)
        )
        if self.staged is not None or self.collected is not None:  # a task with files: what moving them took
            fields[TRANSFER] = transfer_field(self.staged, self.collected, fields)
        return fields


def remove_sandbox(path: str) -> None:
    try:
        os.rmdir(path)  # the common case, a task that left nothing behind: one syscall
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def _stdout_file() -> Any:
    """An unnamed file for the task's stdout and stderr (O_TMPFILE: nothing to clean up)."""
    try:
        return open(os.open(tempfile.gettempdir(), os.O_TMPFILE | os.O_RDWR, 0o600), "rb", buffering=0)
    except OSError:  # a file system without O_TMPFILE
        return tempfile.TemporaryFile(buffering=0)


def _devnull() -> int:
    """One /dev/null descriptor for every task's stdin (not inherited but as stdin)."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY)
    return _DEVNULL


_DEVNULL: int | None = None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
