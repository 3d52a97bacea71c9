"""A warm Python process that runs PythonTasks one after another.

Started by the worker's pool as ``python -m wq_redis.worker.child FD LIFELINE [LEDGER]`` in
its own session (so a time limit or a cancel kills the function's whole process group).
It talks to the worker over the socket ``FD`` with the messages of messages.py, keeps
loaded functions by digest, and captures the file descriptors 1 and 2 (see ``Capture``),
so output of C extensions and of subprocesses the function starts lands in the task's
``std_output`` too.  It imports only the child package and the protocol modules a call
needs; its fast lane (lane.py, with redis-py) only once the worker starts one.
"""

from __future__ import annotations

import gc
import os
import pickle
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

from ...protocol.serialize import plain_data
from .capture import Capture
from .channel import Channel, out_of_band
from .environment import ProcessEnvironment, apply_variables
from .messages import BatchDone, CallDone, LaneEnd, LaneSpec, NeedBodies, RunBatch, RunCall, Status, StopLane
from .sandbox import Sandbox

MAX_CACHED_FUNCTIONS = 64


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _import_hint(exc: Exception) -> str:
    """How to fix a function (or argument) pickled by reference to a module this worker
    cannot import: cloudpickle stores ``mymodule.f`` as a name, imported where it loads."""
    if not isinstance(exc, ImportError) or not exc.name:
        return ""
    module = exc.name.partition(".")[0]
    return (
        f"; module {module!r} is not importable here: add its directory to the worker's PYTHONPATH, "
        f"or have the manager send it by value (cloudpickle.register_pickle_by_value({module}) "
        "before submitting)"
    )


class Child:
    def __init__(self, conn: Channel, ledger: int = -1) -> None:
        self.conn = conn
        self.ledger = ledger  # write end of the fast lane's ledger (worker/lane.py)
        self.functions: dict[str, Callable[..., Any]] = {}
        self.capture = Capture()
        self.environment = ProcessEnvironment()
        self.sandbox = Sandbox()
        self._lane: Any = None

    def serve(self) -> None:
        while True:
            try:
                message = self.conn.recv_message()
            except (EOFError, OSError):  # the worker is gone
                return
            reply: CallDone | BatchDone | NeedBodies | LaneEnd
            if isinstance(message, RunBatch):
                reply = self.run_batch(message)
            elif isinstance(message, RunCall):
                reply = self.run(message)
            elif isinstance(message, LaneSpec):
                reply = self.lane().serve(message)
            elif isinstance(message, StopLane):  # for a lane that had ended already
                continue
            else:
                raise TypeError(f"not a message for a warm child: {type(message).__name__}")
            self.conn.send_message(reply)

    def lane(self) -> Any:
        """This child's fast lane (lane.py), made on first use: a child that never claims
        for its worker never imports redis or opens a connection."""
        if self._lane is None:
            from .lane import ChildLane

            self._lane = ChildLane(self)
            gc.freeze()  # what it imported lives as long as this process: out of the collector's sight
        return self._lane

    def load(self, digest: str, body: bytes | None) -> Callable[..., Any]:
        """The function of ``digest``: cached, else loaded from ``body``.  The cache is
        trimmed only between messages (``trim_functions``), never here: a batch checked
        that its functions were all here or sent must find them all while it runs."""
        func = self.functions.get(digest)
        if func is None:
            if body is None:
                raise LookupError(f"function {digest[:12]} is not cached in this process")
            func = self.functions[digest] = cloudpickle.loads(body)
        return func

    def trim_functions(self, used: Iterable[str]) -> None:
        """Forget the oldest functions past ``MAX_CACHED_FUNCTIONS``, never one of ``used``
        (the message just run): the worker sends a body again when asked (``NeedBodies``)."""
        excess = len(self.functions) - MAX_CACHED_FUNCTIONS
        if excess > 0:
            keep = set(used)
            for digest in [d for d in self.functions if d not in keep][:excess]:
                del self.functions[digest]

    def run(self, call: RunCall) -> CallDone | NeedBodies:
        """Call the function in the task's sandbox; ``NeedBodies`` when it is no longer
        cached here and was sent without it."""
        if call.body is None and call.digest not in self.functions:
            return NeedBodies((call.digest,))
        start_cpu = _cpu_seconds()
        start = self.capture.reset()
        self.environment.use(call.env)
        os.chdir(call.cwd)
        status, value, error = self._call(call.digest, call.body, call.args)
        self.trim_functions((call.digest,))
        stdout = self.capture.between(start, self.capture.offset())
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        return CallDone(status, value, error, stdout, _cpu_seconds() - start_cpu, rss)

    def _call(self, digest: str, body: bytes | None, args: bytes | None) -> tuple[Status, Any, str]:
        """Load and call the function: its status, pickled value and error (the traceback
        of a failure goes to the captured output)."""
        try:
            func = self.load(digest, body)
            call_args, call_kwargs = cloudpickle.loads(args) if args else ((), {})
        except Exception as exc:
            traceback.print_exc()
            return (
                Status.ERROR,
                None,
                f"cannot load the task's function or arguments on the worker: {exc!r}{_import_hint(exc)}",
            )
        try:
            value, status = func(*call_args, **call_kwargs), Status.OK
        except BaseException as exc:  # SystemExit too: the function's own failure
            traceback.print_exc()
            value, status = exc, Status.RAISED
        return _dump_result(value, status)

    def run_batch(self, batch: RunBatch) -> BatchDone | NeedBodies:
        """Run short calls back to back, one message each way for the whole batch.

        Each call's output is the captured bytes between two offsets; the sandbox is
        emptied after calls that leave files behind.  Answers ``NeedBodies`` with the
        digests this process lacks.
        """
        functions, bodies = self.functions, batch.bodies
        missing = sorted({digest for digest in batch.digests if digest not in functions and digest not in bodies})
        if missing:
            return NeedBodies(tuple(missing))
        offset = self.capture.reset()
        self.environment.use(batch.env)
        self.sandbox.use(batch.cwd)
        statuses, values, errors, stdouts, cpu_times, walls = [], [], [], [], [], []  # BatchDone's columns
        cpu = _cpu_seconds()
        for task_id, digest, args, task_env in zip(batch.task_ids, batch.digests, batch.args, batch.task_envs):
            wall = time.perf_counter()
            os.environ["WQ_TASK_ID"] = str(task_id)
            status, value, error = Status.ERROR, None, ""
            saved_env = {k: os.environ.get(k) for k in task_env} if task_env else None
            try:
                if task_env:
                    apply_variables(task_env)
                self.sandbox.enter()
                status, value, error = self._call(digest, bodies.get(digest), args)
            finally:
                if saved_env:
                    apply_variables(saved_env)
                self.sandbox.empty()
            end = self.capture.offset()
            cpu_end = _cpu_seconds()
            statuses.append(status)
            values.append(value)
            errors.append(error)
            stdouts.append(self.capture.between(offset, end))
            cpu_times.append(cpu_end - cpu)
            walls.append(time.perf_counter() - wall)
            offset, cpu = end, cpu_end
        self.trim_functions(batch.digests)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        return BatchDone(statuses, values, errors, stdouts, cpu_times, walls, rss)


def _dump_result(value: Any, status: Status) -> tuple[Status, Any, str]:
    """The call's status, its value pickled (marked to travel beside the message when
    large) and the error: a value that cannot be pickled is an ERROR, an exception that
    cannot be sent travels as its text."""
    if plain_data(value):  # the common results: the standard pickler, much cheaper
        return status, out_of_band(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)), ""
    try:
        return status, out_of_band(cloudpickle.dumps(value)), ""
    except Exception as exc:
        if status is Status.RAISED:  # an exception that cannot travel: send its text
            return status, out_of_band(cloudpickle.dumps(RuntimeError(f"{type(value).__name__}: {value}"))), ""
        error = f"the return value ({type(value).__name__}) cannot be pickled: {exc}"
        print(error, file=sys.stderr)
        return Status.ERROR, None, error


def _watch_lifeline(fd: int) -> None:
    """Kill this process group when the worker dies, even by SIGKILL: its end of the
    lifeline pipe closes and the read returns.  Without this a task would keep running,
    orphaned, after its worker was killed (and run again elsewhere)."""
    try:
        while os.read(fd, 1):
            pass
    finally:
        os.killpg(0, signal.SIGKILL)


def main() -> None:
    conn = Channel.from_fd(int(sys.argv[1]))
    threading.Thread(target=_watch_lifeline, args=(int(sys.argv[2]),), daemon=True).start()
    ledger = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    if ledger >= 0:
        os.set_blocking(ledger, False)  # a full ledger: the lane tells the worker over the socket
    Child(conn, ledger).serve()
