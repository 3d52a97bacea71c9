"""Turning a Task into Redis hash fields and back.

Hash fields of a task (short names: Redis keeps small hashes as compact listpacks):
  s state, q queue member, p score (-priority; absent for priority 0), a attempts,
  mr max retries, tok lease token, w worker, ts/tf start/finish (us, Redis time),
  sub submit time (us), spec the envelope (absent for a PythonTask that specifies
  nothing: serialize.DEFAULT_PY_SPEC), fn function SHA-256 (32 raw bytes), args pickled arguments
  (absent for a call without any), cat category (when not "default"),
  in:<name> input file bytes, cin:/tin:/ctin:<name> cached files and directories (files.py);
  results: r result code, rs return status, out stdout+stderr, val pickled return value,
  err failure message, host, alloc/meas resources JSON, o:<name> output file bytes,
  od:<name> output directory as tar; im:/om:<name> an input's or output's mode (octal, when
  not 0644), url:/curl:/fcmd:/cfcmd:<name> a URL or file command the worker makes the file with.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..protocol.codes import Result
from ..protocol.fields import (
    ARGS,
    ATTEMPTS_B,
    CATEGORY,
    FINISHED_B,
    FUNCTION,
    HOST_B,
    MAX_RETRIES,
    MEMBER_B,
    OUTPUT_DIR,
    OUTPUT_FILE,
    OUTPUT_MODE,
    RESULT_B,
    RETURN_STATUS_B,
    SPEC,
    SPEC_B,
    STARTED_B,
    SUBMITTED,
    SUBMITTED_B,
    WORKER_B,
)
from ..protocol.files import DEFAULT_MODE, parse_mode, unpack_directory
from ..protocol.resources import RESOURCE_NAMES
from ..protocol.serialize import DEFAULT_PY_SPEC, FunctionCache, pack_spec, pickle_arguments, unpack_spec
from .files import FileStager
from .spec import InputFile
from .task import PythonTask, Task


def _envelope(task: Task, enforce: bool) -> dict[str, Any]:
    """Everything the worker needs to know of a task, before defaults are left out."""
    spec = task._spec
    return {
        "kind": task.kind,
        "command": task.command,
        "tag": spec.tag,
        "category": spec.category,
        "priority": spec.priority,
        "max_retries": spec.max_retries,
        "request": [spec.cores, spec.memory, spec.disk, spec.gpus],
        "env": spec.env,
        "inputs": [[i.local, i.remote] for i in spec.inputs],
        "outputs": [list(o) for o in spec.outputs],
        "output_dirs": [list(o) for o in spec.output_dirs],
        "running_time_max": spec.running_time_max,
        "running_time_min": spec.running_time_min,  # read by claim.lua only
        "end_time": spec.end_time,
        "enforce": enforce,
    }


# What a task that specifies nothing looks like: these values are left out of the wire.
SPEC_DEFAULTS: dict[str, Any] = _envelope(Task(""), enforce=False)
_PLAIN_SPEC = Task("")._spec


def encode_task(
    task: Task, functions: FunctionCache, enforce: bool = False, files: FileStager | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Hash fields of ``task`` (without state fields) and the function bodies it needs.

    Cached inputs are left with ``files`` to upload (``FileStager.flush``) before the
    submit; without ``files`` every input is inlined.  What the worker can default is
    left out (see ``serialize.task_spec``): a PythonTask that specifies nothing has no
    spec, and a call without arguments no ``args``.
    """
    spec = task._spec
    now_us = time.time_ns() // 1000
    fields: dict[str, Any] = {SUBMITTED: now_us}
    if spec == _PLAIN_SPEC and not enforce:
        if task.kind != "py":  # a PythonTask's display name is not needed by the worker
            fields[SPEC] = pack_spec({"kind": task.kind, "command": task.command})
    else:
        envelope = _envelope(task, enforce)
        # Only what differs from the defaults travels: a small spec keeps the task's hash in
        # Redis' compact listpack encoding (values up to 64 bytes), about 5x smaller than a
        # hashtable (MEMORY USAGE of a task's hash; `python -m bench.run` reports the bytes
        # per queued task in its B/queued column, bench/README.md).
        fields[SPEC] = pack_spec(
            {k: v for k, v in envelope.items() if k in ("kind", "command") or v != SPEC_DEFAULTS.get(k)}
        )
        if spec.max_retries:
            fields[MAX_RETRIES] = spec.max_retries
        if spec.category != "default":
            fields[CATEGORY] = spec.category
        if spec.inputs:
            fields.update((files or FileStager(use_cache=False)).input_fields(spec.inputs))
    bodies: dict[str, bytes] = {}
    if isinstance(task, PythonTask):
        digest, body = functions.get(task._func)
        bodies[digest] = body
        fields[FUNCTION] = bytes.fromhex(digest)  # raw: 32 bytes less per task in Redis
        if task._args or task._kwargs:
            fields[ARGS] = pickle_arguments(task._args, task._kwargs)
    task.submit_time = now_us
    return fields, bodies


def task_from_fields(task_id: int, fields: dict[bytes, bytes]) -> Task:
    """Rebuild a task submitted by another manager process (re-attach after a crash)."""
    # Only a PythonTask that specifies nothing has no spec (serialize.DEFAULT_PY_SPEC).
    spec = dict(DEFAULT_PY_SPEC) if SPEC_B not in fields else unpack_spec(fields[SPEC_B])
    task: Task
    if spec["kind"] == "py":
        task = PythonTask.__new__(PythonTask)
        Task.__init__(task, spec["command"])
        task._func, task._args, task._kwargs = None, (), {}  # type: ignore[assignment]  # rebuilt: never run here
        task._value_loaded, task._value = False, None
    else:
        task = Task(spec["command"])
    s = task._spec
    s.cores, s.memory, s.disk, s.gpus = spec.get("request", [None] * len(RESOURCE_NAMES))
    s.tag, s.category = spec.get("tag"), spec.get("category", "default")
    s.priority, s.max_retries = spec.get("priority", 0.0), spec.get("max_retries", 0)
    s.running_time_max, s.end_time = spec.get("running_time_max", 0.0), spec.get("end_time", 0)
    s.running_time_min = spec.get("running_time_min", 0)
    s.env = spec.get("env", {})
    s.inputs = [InputFile(local, remote) for local, remote in spec.get("inputs", [])]
    s.outputs = [(local, remote) for local, remote in spec.get("outputs", [])]
    s.output_dirs = [(local, remote) for local, remote in spec.get("output_dirs", [])]
    sub = fields.get(SUBMITTED_B)
    task.submit_time = int(sub) if sub else None
    return task


def apply_results(task: Task, task_id: int, fields: dict[bytes, bytes]) -> None:
    """Fill ``task`` with the results a worker wrote, and write its output files locally."""
    task._id = task_id
    task._fields = fields
    for local, remote in task._spec.outputs:
        data = fields.get(f"{OUTPUT_FILE}{remote}".encode())
        if data is None:
            continue
        directory = os.path.dirname(local)
        if directory:
            os.makedirs(directory, exist_ok=True)
        _write_output(local, data, fields.get(f"{OUTPUT_MODE}{remote}".encode()))
    for local, remote in task._spec.output_dirs:
        data = fields.get(f"{OUTPUT_DIR}{remote}".encode())
        if data is not None:
            unpack_directory(data, local)


def _write_output(local: str, data: bytes, mode_field: bytes | None) -> None:
    """An output file, created with the mode the worker saw (less this process' umask; a
    file already there keeps its own, as in Work Queue).  A mode field that does not parse
    (another client's garbage) leaves the usual mode."""
    mode = DEFAULT_MODE
    if mode_field is not None:
        try:
            mode = parse_mode(mode_field)
        except ValueError:
            pass
    with open(os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode), "wb") as handle:
        handle.write(data)


SHOWN_CHARS = 20  # of a bad value quoted in an error
_INTEGER_FIELDS = (RETURN_STATUS_B, ATTEMPTS_B, STARTED_B, FINISHED_B, SUBMITTED_B)
_TEXT_FIELDS = (WORKER_B, HOST_B, MEMBER_B)  # decoded strictly (OUTPUT and ERROR are decoded leniently)
_RESULT_CODES = frozenset(b"%d" % code for code in Result)  # as workers write them


def unreadable_result(fields: dict[bytes, bytes]) -> str | None:
    """What is wrong with a finished task's result fields, or None when ``Task`` can read
    them all (its properties parse them lazily: a damaged field would raise in user code).
    Runs for every result, so each check is one C call; the resources (MEASURED,
    ALLOCATED) are not checked here: ``Resources.from_json`` reads garbage as unknown."""
    code = fields.get(RESULT_B)
    if code is None:
        return "no result code"
    if code not in _RESULT_CODES:
        return f"result code {code[:SHOWN_CHARS]!r} is not one of Work Queue's"
    for name in _INTEGER_FIELDS:
        value = fields.get(name)
        if value is not None and not value.lstrip(b"-").isdigit():
            return f"field {name.decode()} = {value[:SHOWN_CHARS]!r} is not an integer"
    for name in _TEXT_FIELDS:
        value = fields.get(name)
        if value is not None:
            try:
                value.decode()
            except UnicodeDecodeError:
                return f"field {name.decode()} is not UTF-8 text"
    return None
