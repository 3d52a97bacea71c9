"""Running one claimed task: sandbox, inputs, execution, time limits, outputs, result fields.

Command tasks run as ``/bin/sh -c COMMAND`` in their own session inside a per-task
sandbox; PythonTasks run in a warm child process (see ``pool``).  Either way a time limit
or a cancel kills the task's whole process group.  ``TaskRun.execute`` returns the hash
fields ``complete.lua`` writes, or None when the task was cancelled or its lease lost
(nobody wants that result any more).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..codes import Result
from ..resources import Request
from ..serialize import EnvelopeError, unpack_spec
from ..server import _die_with_parent
from .limits import MAX_STDOUT_BYTES
from .pool import ChildDied, Interrupted, WarmPool
from .resources import GPU
from .waiting import CancelSignal, wait_readable

HOSTNAME = socket.gethostname()


@dataclass
class Outcome:
    result: Result
    return_status: int = 0
    stdout: bytes = b""
    error: str = ""
    value: bytes | None = None
    cpu_time: float = 0.0
    max_rss_mb: int = 0


class TaskRun:
    """One attempt of one task on this worker."""

    def __init__(self, task_id: int, fields: dict[bytes, bytes], allocation: Request, gpus: list[GPU],
                 workdir: str, pool: WarmPool, fetch_function: Callable[[str], bytes | None],
                 max_result_bytes: int) -> None:
        self.task_id = task_id
        self.fields = fields
        self.allocation = allocation
        self.gpus = gpus
        self.pool = pool
        self.fetch_function = fetch_function
        self.max_result_bytes = max_result_bytes
        self.attempt = int(fields.get(b"a", b"1"))
        self.sandbox = os.path.join(workdir, f"t{task_id}.{self.attempt}")
        self.cancel_signal = CancelSignal()
        self.deadline_kind = Result.TASK_MAX_RUN_TIME

    def cancel(self) -> None:
        """Stop the task from another thread (lease lost or task cancelled)."""
        self.cancel_signal.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_signal.is_set

    def execute(self) -> dict[str, Any] | None:
        started = time.monotonic()
        try:
            outcome, outputs = self._run()
        finally:
            shutil.rmtree(self.sandbox, ignore_errors=True)
            self.cancel_signal.close()
        if self.cancelled:
            return None
        return self._fields(outcome, outputs, time.monotonic() - started)

    # -- the attempt -------------------------------------------------------------------
    def _run(self) -> tuple[Outcome, dict[str, bytes]]:
        try:
            spec = unpack_spec(self.fields.get(b"spec"))
        except EnvelopeError as exc:
            return Outcome(Result.UNKNOWN, error=f"malformed task: {exc}"), {}
        timeout = self._timeout(spec)
        if timeout is not None and timeout <= 0:
            return Outcome(Result.TASK_TIMEOUT, error="the task's end time passed before it started"), {}
        try:
            self._stage_inputs()
        except OSError as exc:
            return Outcome(Result.INPUT_MISSING, error=f"cannot stage input files: {exc}"), {}
        env = self._environment(spec.get("env") or {})
        if spec["kind"] == "py":
            outcome = self._run_python(env, timeout)
        else:
            outcome = self._run_command(spec["command"], env, timeout)
        return outcome, self._collect_outputs(spec, outcome)

    def _timeout(self, spec: dict[str, Any]) -> float | None:
        limits = []
        if spec.get("running_time_max"):
            limits.append((float(spec["running_time_max"]), Result.TASK_MAX_RUN_TIME))
        if spec.get("end_time"):
            limits.append((spec["end_time"] / 1e6 - time.time(), Result.TASK_TIMEOUT))
        if not limits:
            return None
        seconds, self.deadline_kind = min(limits)
        return seconds

    def _stage_inputs(self) -> None:
        os.makedirs(self.sandbox, exist_ok=True)
        for name, data in self.fields.items():
            if name.startswith(b"in:"):
                path = os.path.join(self.sandbox, name[3:].decode())
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as handle:
                    handle.write(data)

    def _environment(self, task_env: dict[str, str | None]) -> dict[str, str | None]:
        """Work Queue's CORES/MEMORY/DISK/GPUS, the GPUs held, then the task's own variables."""
        env: dict[str, str | None] = {
            "CORES": str(self.allocation.cores), "MEMORY": str(self.allocation.memory),
            "DISK": str(self.allocation.disk), "GPUS": str(self.allocation.gpus),
            "WQ_TASK_ID": str(self.task_id), "WQ_SANDBOX": self.sandbox,
        }
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(g.device_id for g in self.gpus)
        env.update(task_env)
        return env

    def _run_command(self, command: str, task_env: dict[str, str | None], timeout: float | None) -> Outcome:
        env = {k: v for k, v in {**os.environ, **task_env}.items() if v is not None}
        if not self.gpus and self.pool.hide_gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""
        with tempfile.TemporaryFile() as stdout:
            # the shell dies with this runner thread's process if the worker is killed
            process = subprocess.Popen(["/bin/sh", "-c", command], cwd=self.sandbox, env=env, stdout=stdout,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                       preexec_fn=_die_with_parent)
            pidfd = os.pidfd_open(process.pid)
            try:
                finished = wait_readable(pidfd, self.cancel_signal.read_fd, timeout)
            finally:
                os.close(pidfd)
            _kill_group(process.pid)  # leftovers too: a task leaves nothing running behind
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            stdout.seek(0)
            output = stdout.read(MAX_STDOUT_BYTES)
        cpu, rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024
        if not finished:
            return Outcome(self.deadline_kind, -signal.SIGKILL, output, self._limit_message(timeout), None, cpu, rss)
        code = process.returncode
        if code < 0:
            return Outcome(Result.SIGNAL, -code, output, f"killed by signal {-code}", None, cpu, rss)
        return Outcome(Result.SUCCESS, code, output, "", None, cpu, rss)

    def _run_python(self, env: dict[str, str | None], timeout: float | None) -> Outcome:
        digest = self.fields.get(b"fn", b"").decode()
        proc = self.pool.acquire([g.device_id for g in self.gpus])
        body = None
        if digest not in proc.functions:
            body = self.fetch_function(digest)
            if body is None:
                self.pool.release(proc)
                return Outcome(Result.UNKNOWN, error=f"the task's function {digest[:12]} is missing from Redis")
        message = {"digest": digest, "body": body, "args": self.fields.get(b"args", b""), "env": env,
                   "cwd": self.sandbox}
        try:
            reply = proc.call(message, timeout, self.cancel_signal.read_fd)
        except Interrupted:
            return Outcome(self.deadline_kind, -signal.SIGKILL, b"", self._limit_message(timeout))
        except ChildDied as exc:
            proc.close()
            status = -exc.returncode if exc.returncode < 0 else exc.returncode
            return Outcome(Result.SIGNAL, status, b"", str(exc))
        self.pool.release(proc)
        outcome = Outcome(Result.SUCCESS, 0, reply["stdout"], reply["error"], reply["value"],
                          reply["cpu_time"], reply["max_rss_mb"])
        if reply["status"] == "raised":
            outcome.return_status = 1
        elif reply["status"] == "error":
            outcome.result, outcome.return_status = Result.UNKNOWN, 1
        return outcome

    def _limit_message(self, timeout: float | None) -> str:
        if self.cancelled:
            return "cancelled"
        if self.deadline_kind == Result.TASK_TIMEOUT:
            return "the task's end time passed; it was killed"
        return f"ran past its running time limit of {timeout:g} s; it was killed"

    def _collect_outputs(self, spec: dict[str, Any], outcome: Outcome) -> dict[str, bytes]:
        outputs: dict[str, bytes] = {}
        missing = []
        for _local, remote in spec.get("outputs", []):
            try:
                with open(os.path.join(self.sandbox, remote), "rb") as handle:
                    outputs[remote] = handle.read(self.max_result_bytes + 1)
            except OSError:
                missing.append(remote)
        if missing and outcome.result == Result.SUCCESS:
            outcome.result = Result.OUTPUT_MISSING
            outcome.error = f"output file(s) not produced: {', '.join(missing)}"
        return outputs

    # -- the result ----------------------------------------------------------------------
    def _fields(self, outcome: Outcome, outputs: dict[str, bytes], wall: float) -> dict[str, Any]:
        size = len(outcome.stdout) + len(outcome.value or b"") + sum(len(v) for v in outputs.values())
        if size > self.max_result_bytes:
            outcome = Outcome(Result.OUTPUT_TRANSFER_ERROR, outcome.return_status, outcome.stdout[:65536],
                              f"result of {size} bytes exceeds the limit of {self.max_result_bytes} bytes",
                              None, outcome.cpu_time, outcome.max_rss_mb)
            outputs = {}
        a = self.allocation
        fields: dict[str, Any] = {
            "r": int(outcome.result), "rs": outcome.return_status, "out": outcome.stdout, "host": HOSTNAME,
            "alloc": json.dumps({"cores": a.cores, "memory": a.memory, "disk": a.disk, "gpus": a.gpus}),
            "meas": json.dumps({"cores": round(outcome.cpu_time / wall, 3) if wall > 0 else 0,
                                "memory": outcome.max_rss_mb, "wall_time": round(wall, 6),
                                "cpu_time": round(outcome.cpu_time, 6)}),
        }
        if outcome.error:
            fields["err"] = outcome.error
        if outcome.value is not None:
            fields["val"] = outcome.value
        for remote, data in outputs.items():
            fields[f"o:{remote}"] = data
        return fields


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
