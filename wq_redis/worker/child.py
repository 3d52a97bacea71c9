"""A warm Python process that runs PythonTasks one after another.

Started by the worker's pool as ``python -m wq_redis.worker.child FD`` in its own session
(so a time limit or a cancel kills the function's whole process group).  It talks to the
worker over the socket ``FD`` with pickled messages, keeps loaded functions by digest, and
captures the file descriptors 1 and 2 (see ``Capture``), so output of C extensions and of
subprocesses the function starts lands in the task's ``std_output`` too.
"""

from __future__ import annotations

import gc
import os
import pickle
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

from wq_redis.protocol.serialize import plain_data
from wq_redis.worker.channel import Channel, out_of_band
from wq_redis.worker.limits import MAX_STDOUT_BYTES

MAX_CACHED_FUNCTIONS = 64


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Capture:
    """Where fds 1 and 2 point for the child's whole life: one temporary file (emptied at
    the start of a message once it holds a megabyte), so a call's output (of C extensions
    and of subprocesses it starts too) is the file's bytes between two offsets.  Redirected once instead of per
    call: saving, pointing and restoring the two descriptors cost ten system calls a call.
    """

    TRUNCATE_BYTES = 1 << 20  # the file is emptied when a message starts past this much

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.fd = self.file.fileno()
        self.reset()

    def reset(self) -> int:
        """Point fds 1 and 2 here again (a task may have closed or moved them) and return
        where this message's output starts: after earlier output (of the last message, or
        of a stray background process), which is cut only once the file grew large (a
        truncate per message was a tenth of a one-task round trip)."""
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)
        start = self.offset()  # what an earlier task left buffered lands before the start
        if start > self.TRUNCATE_BYTES:
            os.ftruncate(self.fd, 0)
            start = os.lseek(self.fd, 0, os.SEEK_SET)
        return start

    def offset(self) -> int:
        """Where the next output lands (after what Python still buffered)."""
        _flush_streams()
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def between(self, start: int, end: int) -> bytes:
        """The output written between two offsets, cut at MAX_STDOUT_BYTES."""
        data = os.pread(self.fd, min(end - start, MAX_STDOUT_BYTES + 1), start) if end > start else b""
        if len(data) > MAX_STDOUT_BYTES:
            data = data[:MAX_STDOUT_BYTES] + b"\n[wq-redis: output truncated at 16 MiB]\n"
        return data


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


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the task closed it (or its file descriptor)
            pass


class Child:
    def __init__(self, conn: Channel, ledger: int = -1) -> None:
        self.conn = conn
        self.ledger = ledger  # write end of the fast lane's ledger (worker/lane.py)
        self.functions: dict[str, Callable[..., Any]] = {}
        self.capture = Capture()
        self.env: dict[str, str | None] = {}  # the variables the last message set
        self.original_env: dict[str, str | None] = {}  # their values before any message
        self.sandbox = Sandbox()
        self._lane: Any = None

    def serve(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):  # the worker is gone
                return
            if "lane" in message:
                if message["lane"] == "stop":  # for a lane that had ended already
                    continue
                reply = self.lane().serve(message["lane"])
            else:
                reply = self.run_batch(**message) if "calls" in message else self.run(**message)
            self.conn.send(reply)

    def lane(self) -> Any:
        """This child's fast lane (worker/lane.py), made on first use: a child that never
        claims for its worker never imports redis or opens a connection."""
        if self._lane is None:
            from wq_redis.worker.lane import ChildLane

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
        (the message just run): the worker sends a body again when asked (``need_body``)."""
        excess = len(self.functions) - MAX_CACHED_FUNCTIONS
        if excess > 0:
            keep = set(used)
            for digest in [d for d in self.functions if d not in keep][:excess]:
                del self.functions[digest]

    def use_env(self, env: dict[str, str | None]) -> None:
        """Make a message's variables the process's: set what changed since the last
        message, and give variables it no longer names their original value.  Messages of
        one slot repeat the same variables, so most messages set none."""
        if env == self.env:
            return
        for name in self.env.keys() - env.keys():
            _set_env(name, self.original_env[name])
        for name, value in env.items():
            if name not in self.original_env:
                self.original_env[name] = os.environ.get(name)
            if name not in self.env or self.env[name] != value:
                _set_env(name, value)
        self.env = dict(env)

    def run(self, digest: str, body: bytes | None, args: bytes, env: dict[str, str | None], cwd: str) -> dict[str, Any]:
        """Call the function; status 'ok', 'raised' (the exception is the output), 'error',
        or 'need_body' when the function is no longer cached here and was sent without it."""
        if body is None and digest not in self.functions:
            return {"status": "need_body"}
        reply: dict[str, Any] = {"status": "error", "value": None, "error": ""}
        start_cpu = _cpu_seconds()
        start = self.capture.reset()
        self.use_env(env)
        os.chdir(cwd)
        self._call(digest, body, args, reply)
        self.trim_functions((digest,))
        reply["stdout"] = self.capture.between(start, self.capture.offset())
        reply["cpu_time"] = _cpu_seconds() - start_cpu
        reply["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        return reply

    def _call(self, digest: str, body: bytes | None, args: bytes | None, reply: dict[str, Any]) -> None:
        """Load and call the function; fills ``reply``'s status, value and error (the
        traceback of a failure goes to the captured output)."""
        try:
            func = self.load(digest, body)
            call_args, call_kwargs = cloudpickle.loads(args) if args else ((), {})
        except Exception as exc:
            reply["error"] = f"cannot load the task's function or arguments on the worker: {exc!r}{_import_hint(exc)}"
            traceback.print_exc()
            return
        try:
            value, reply["status"] = func(*call_args, **call_kwargs), "ok"
        except BaseException as exc:  # SystemExit too: the function's own failure
            traceback.print_exc()
            value, reply["status"] = exc, "raised"
        reply["value"] = out_of_band(_dump_result(value, reply))

    def run_batch(
        self,
        calls: list[tuple[int, str, bytes | None, dict[str, str | None]]],
        bodies: dict[str, bytes],
        env: dict[str, str | None],
        cwd: str,
    ) -> dict[str, Any]:
        """Run short calls back to back: (task id, digest, args, the task's own variables).

        One message each way for the whole batch.  Each call's output is the captured
        bytes between two offsets; the sandbox is emptied after calls that leave files
        behind.  Replies 'need_body' with the digests this process lacks.
        """
        missing = sorted({digest for _, digest, _, _ in calls if digest not in self.functions and digest not in bodies})
        if missing:
            return {"status": "need_body", "digests": missing}
        offset = self.capture.reset()
        self.use_env(env)
        self.sandbox.use(cwd)
        results = []
        cpu = _cpu_seconds()
        for task_id, digest, args, task_env in calls:
            wall = time.perf_counter()
            os.environ["WQ_TASK_ID"] = str(task_id)
            reply: dict[str, Any] = {"status": "error", "value": None, "error": ""}
            saved_env = {k: os.environ.get(k) for k in task_env} if task_env else None
            try:
                if task_env:
                    _apply_env(task_env)
                self.sandbox.enter()
                self._call(digest, bodies.get(digest), args, reply)
            finally:
                if saved_env:
                    _apply_env(saved_env)
                self.sandbox.empty()
            end = self.capture.offset()
            cpu_end = _cpu_seconds()
            reply["stdout"] = self.capture.between(offset, end)
            reply["cpu_time"] = cpu_end - cpu
            reply["wall"] = time.perf_counter() - wall
            results.append(reply)
            offset, cpu = end, cpu_end
        self.trim_functions(digest for _, digest, _, _ in calls)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        for reply in results:
            reply["max_rss_mb"] = rss
        return {"status": "ok", "results": results}


class Sandbox:
    """The batch sandbox of this child, emptied after each call that left something in it.

    Held open as a directory descriptor: entering it (``fchdir``) and checking it
    (``fstat``) then cost no path lookup, which was a third of a short call's time here.
    Whether a call left something is told by the directory's modification time, one
    fstat instead of a listing; a time within the file system's clock granularity of the
    last emptying cannot tell (a file made in the same tick leaves it unchanged), so then
    it is listed.
    """

    SETTLED_SECONDS = 0.05  # coarser than any file system's timestamp tick

    def __init__(self) -> None:
        self.path = ""
        self.fd = -1
        self.clean_mtime = -1

    def use(self, path: str) -> None:
        if path != self.path:
            self._close()
            self.path, self.clean_mtime = path, -1

    def enter(self) -> None:
        """Make the sandbox the working directory (again: a call may have moved away)."""
        if self.fd < 0:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        os.fchdir(self.fd)

    def empty(self) -> None:
        if self.fd < 0:
            return
        try:
            stat = os.fstat(self.fd)
        except OSError:
            return
        if stat.st_nlink == 0:  # a call removed the sandbox: the next one opens it by path
            self._close()
            return
        mtime = stat.st_mtime_ns
        if mtime == self.clean_mtime and time.time_ns() - mtime > self.SETTLED_SECONDS * 1e9:
            return
        _empty(self.path)
        try:
            self.clean_mtime = os.fstat(self.fd).st_mtime_ns
        except OSError:
            self.clean_mtime = -1

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _empty(path: str) -> None:
    """Remove what a call left in the batch's sandbox, so the next call starts clean."""
    try:
        leftovers = os.listdir(path)
    except OSError:
        return
    for name in leftovers:
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.unlink(full)
            except OSError:
                pass


def _dump_result(value: Any, reply: dict[str, Any]) -> bytes | None:
    if plain_data(value):  # the common results: the standard pickler, much cheaper
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        return cloudpickle.dumps(value)
    except Exception as exc:
        if reply["status"] == "raised":  # an exception that cannot travel: send its text
            return cloudpickle.dumps(RuntimeError(f"{type(value).__name__}: {value}"))
        reply["status"] = "error"
        reply["error"] = f"the return value ({type(value).__name__}) cannot be pickled: {exc}"
        print(reply["error"], file=sys.stderr)
        return None


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _apply_env(env: dict[str, str | None]) -> None:
    for name, value in env.items():
        _set_env(name, value)


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


if __name__ == "__main__":
    main()
