"""What a finished call becomes: its outcome (result code, status, output, value) and the
hash fields ``complete.lua`` writes for it.

Here, in the child package, because both sides make them: the worker for every task it
runs, a warm child's fast lane (lane.py) for the tasks it claims itself.
"""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...protocol.codes import Result
from ...protocol.fields import ERROR, HOST, MEASURED, OUTPUT, RESULT, RETURN_STATUS, VALUE, VALUE_SIGNATURE, WORKER_B
from .messages import BatchDone, CallDone, Status

if TYPE_CHECKING:
    from ...protocol.signing import Signer

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
    disk_mb: int = -1  # the sandbox's size when the task ended (-1: not measured)


def named_host(fields: dict[bytes, bytes]) -> str:
    """The host in the name of the worker that claimed the task ("w" = NAME@HOST)."""
    return _host_of(fields.get(WORKER_B, b""))


@functools.lru_cache(maxsize=64)  # one worker name for all the tasks a worker claims
def _host_of(worker: bytes) -> str:
    return worker.decode(errors="replace").rpartition("@")[2]


_MEASURED = '{"cores":%.3f,"memory":%d,"wall_time":%.6f,"cpu_time":%.6f}'  # JSON, one C-level format
_MEASURED_DISK = '{"cores":%.3f,"memory":%d,"disk":%d,"wall_time":%.6f,"cpu_time":%.6f}'  # with the sandbox measured


def result_fields(
    task_id: int,
    outcome: Outcome,
    outputs: dict[str, bytes],
    wall: float,
    max_result_bytes: int,
    signer: Signer | None,
    host: str = "",
) -> dict[str, Any]:
    """The hash fields complete.lua writes for one finished attempt."""
    size = len(outcome.stdout) + len(outcome.value or b"") + sum(len(v) for v in outputs.values())
    if size > max_result_bytes:
        outcome = Outcome(
            Result.OUTPUT_TRANSFER_ERROR,
            outcome.return_status,
            outcome.stdout[:65536],
            f"result of {size} bytes exceeds the limit of {max_result_bytes} bytes "
            "(the worker's --max-result-bytes, env WQ_MAX_RESULT_BYTES)",
            None,
            outcome.cpu_time,
            outcome.max_rss_mb,
        )
        outputs = {}
    # What the manager can tell otherwise is left out (fewer fields to write and read):
    # the allocation is the claim's ("alloc", written with the lease), the host is the one in the
    # worker's name ("w" = NAME@HOST) unless told here, and output and status default to
    # empty and 0.
    cores = outcome.cpu_time / wall if wall > 0 else 0.0
    fields: dict[str, Any] = {
        RESULT: int(outcome.result),
        MEASURED: _MEASURED % (cores, outcome.max_rss_mb, wall, outcome.cpu_time)
        if outcome.disk_mb < 0
        else _MEASURED_DISK % (cores, outcome.max_rss_mb, outcome.disk_mb, wall, outcome.cpu_time),
    }
    if outcome.return_status:
        fields[RETURN_STATUS] = outcome.return_status
    if outcome.stdout:
        fields[OUTPUT] = outcome.stdout
    if host != HOSTNAME:
        fields[HOST] = HOSTNAME
    if outcome.error:
        fields[ERROR] = outcome.error
    if outcome.value is not None:
        fields[VALUE] = outcome.value
        if signer is not None:
            fields[VALUE_SIGNATURE] = signer.sign_result(task_id, outcome.value)
    fields.update(outputs)
    return fields


def call_outcome(done: CallDone) -> Outcome:
    """The outcome of one call answered by a warm child."""
    return _outcome(done.status, done.value, done.error, done.stdout, done.cpu_time, done.max_rss_mb)


def batch_outcomes(done: BatchDone) -> list[Outcome]:
    """The outcome of each call of a batch, in order."""
    rss = done.max_rss_mb
    return [
        _outcome(status, value, error, stdout, cpu, rss)
        for status, value, error, stdout, cpu in zip(
            done.statuses, done.values, done.errors, done.stdouts, done.cpu_times
        )
    ]


def _outcome(status: Status, value: Any, error: str, stdout: bytes, cpu_time: float, max_rss_mb: int) -> Outcome:
    if status is Status.OK:
        return Outcome(Result.SUCCESS, 0, stdout, error, value, cpu_time, max_rss_mb)
    if status is Status.RAISED:  # a task that ran: its exception is its output
        return Outcome(Result.SUCCESS, 1, stdout, error, value, cpu_time, max_rss_mb)
    return Outcome(Result.UNKNOWN, 1, stdout, error, value, cpu_time, max_rss_mb)


def missing_function(digest: str) -> Outcome:
    """A call's outcome when its function body is not in Redis (expired, or never stored)."""
    return Outcome(Result.UNKNOWN, 1, b"", f"the task's function {digest[:12]} is missing from Redis")
