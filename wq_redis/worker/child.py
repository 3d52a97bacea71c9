"""A warm Python process that runs PythonTasks one after another.

Started by the worker's pool as ``python -m wq_redis.worker.child FD`` in its own session
(so a time limit or a cancel kills the function's whole process group).  It talks to the
worker over the socket ``FD`` with pickled messages, keeps loaded functions by digest, and
captures the file descriptors 1 and 2 for each call, so output of C extensions and of
subprocesses the function starts lands in the task's ``std_output`` too.
"""

from __future__ import annotations

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
from typing import Any, Callable

import cloudpickle

from wq_redis.worker.channel import Channel
from wq_redis.worker.limits import MAX_STDOUT_BYTES

MAX_CACHED_FUNCTIONS = 64


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Capture:
    """Redirect fds 1 and 2 into one temporary file for the length of a call."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()

    def __enter__(self) -> "Capture":
        sys.stdout.flush()
        sys.stderr.flush()
        self.file.seek(0)
        self.file.truncate()
        self.saved = os.dup(1), os.dup(2)
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])

    def read(self) -> bytes:
        self.file.seek(0)
        data = self.file.read(MAX_STDOUT_BYTES + 1)
        if len(data) > MAX_STDOUT_BYTES:
            data = data[:MAX_STDOUT_BYTES] + b"\n[wq-redis: output truncated at 16 MiB]\n"
        return data


class Child:
    def __init__(self, conn: Channel) -> None:
        self.conn = conn
        self.functions: dict[str, Callable[..., Any]] = {}
        self.capture = Capture()

    def serve(self) -> None:
        while True:
            try:
                message = pickle.loads(self.conn.recv())
            except (EOFError, OSError):  # the worker is gone
                return
            reply = self.run_batch(**message) if "calls" in message else self.run(**message)
            self.conn.send(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))

    def load(self, digest: str, body: bytes | None) -> Callable[..., Any]:
        func = self.functions.get(digest)
        if func is None:
            if body is None:
                raise LookupError(f"function {digest[:12]} is not cached in this process")
            func = cloudpickle.loads(body)
            if len(self.functions) >= MAX_CACHED_FUNCTIONS:
                self.functions.pop(next(iter(self.functions)))
            self.functions[digest] = func
        return func

    def run(self, digest: str, body: bytes | None, args: bytes, env: dict[str, str | None], cwd: str) -> dict[str, Any]:
        """Call the function; status 'ok', 'raised' (the exception is the output), 'error',
        or 'need_body' when the function is no longer cached here and was sent without it."""
        if body is None and digest not in self.functions:
            return {"status": "need_body"}
        saved_env = {k: os.environ.get(k) for k in env}
        reply: dict[str, Any] = {"status": "error", "value": None, "error": ""}
        start_cpu = _cpu_seconds()
        with self.capture:
            try:
                _apply_env(env)
                os.chdir(cwd)
                self._call(digest, body, args, reply)
            finally:
                _apply_env(saved_env)
                os.chdir("/")
        reply["stdout"] = self.capture.read()
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
            reply["error"] = f"cannot load the task's function or arguments on the worker: {exc!r}"
            traceback.print_exc()
            return
        try:
            value, reply["status"] = func(*call_args, **call_kwargs), "ok"
        except BaseException as exc:  # SystemExit too: the function's own failure
            traceback.print_exc()
            value, reply["status"] = exc, "raised"
        reply["value"] = _dump_result(value, reply)

    def run_batch(self, calls: list[tuple[int, str, bytes | None, dict[str, str | None]]], bodies: dict[str, bytes],
                  env: dict[str, str | None], cwd: str) -> dict[str, Any]:
        """Run short calls back to back: (task id, digest, args, the task's own variables).

        One message each way for the whole batch.  Output is captured once, each call's
        share found by the file offset; the sandbox is emptied between calls that leave
        files behind.  Replies 'need_body' with the digests this process lacks.
        """
        missing = sorted({digest for _, digest, _, _ in calls if digest not in self.functions and digest not in bodies})
        if missing:
            return {"status": "need_body", "digests": missing}
        replies = []
        saved_env = {k: os.environ.get(k) for k in env}
        saved_env["WQ_TASK_ID"] = os.environ.get("WQ_TASK_ID")
        _apply_env(env)
        out = self.capture.file
        with self.capture:
            try:
                for task_id, digest, args, task_env in calls:
                    os.environ["WQ_TASK_ID"] = str(task_id)
                    replies.append(self._run_one(digest, bodies.get(digest), args, task_env, cwd, out.fileno()))
            finally:
                _apply_env(saved_env)
                os.chdir("/")
            out.seek(0)
            captured = out.read()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        results = []
        for status, value, error, start, end, cpu, wall in replies:
            stdout = captured[start:end]
            if len(stdout) > MAX_STDOUT_BYTES:
                stdout = stdout[:MAX_STDOUT_BYTES] + b"\n[wq-redis: output truncated at 16 MiB]\n"
            results.append({"status": status, "value": value, "error": error, "stdout": stdout,
                            "cpu_time": cpu, "max_rss_mb": rss, "wall": wall})
        return {"status": "ok", "results": results}

    def _run_one(self, digest: str, body: bytes | None, args: bytes | None, task_env: dict[str, str | None],
                 cwd: str, out_fd: int) -> tuple[str, bytes | None, str, int, int, float, float]:
        """One call of a batch: (status, pickled value, error, output start, end, cpu s, wall s)."""
        start = os.lseek(out_fd, 0, os.SEEK_CUR)
        wall0 = time.perf_counter()
        cpu0, children0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        saved_env = {k: os.environ.get(k) for k in task_env} if task_env else None
        reply: dict[str, Any] = {"status": "error", "value": None, "error": ""}
        try:
            if task_env:
                _apply_env(task_env)
            os.chdir(cwd)
            self._call(digest, body, args, reply)
        finally:
            if saved_env:
                _apply_env(saved_env)
            _empty(cwd)
        sys.stdout.flush()
        sys.stderr.flush()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (time.process_time() - cpu0 + children.ru_utime + children.ru_stime
               - children0.ru_utime - children0.ru_stime)
        return (reply["status"], reply["value"], reply["error"], start, os.lseek(out_fd, 0, os.SEEK_CUR), cpu,
                time.perf_counter() - wall0)


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


_PLAIN_TYPES = (type(None), bool, int, float, str, bytes)


def _dump_result(value: Any, reply: dict[str, Any]) -> bytes | None:
    if type(value) in _PLAIN_TYPES:  # the common results: the standard pickler, much cheaper
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


def _apply_env(env: dict[str, str | None]) -> None:
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


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
    Child(conn).serve()


if __name__ == "__main__":
    main()
