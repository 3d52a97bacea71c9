"""Warm Python processes for PythonTasks, kept between tasks.

A child is bound at start to the GPUs it may see (``CUDA_VISIBLE_DEVICES`` cannot change
once CUDA is initialised in a process), so the pool keeps idle children per GPU set.  A
child that was killed (time limit, cancel) or died is replaced by a fresh one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from ..protocol.signing import SignatureError
from ..protocol.store import TaskRefused
from .child.channel import Channel
from .child.messages import BatchDone, CallDone, NeedBodies, RunBatch, RunCall
from .child.results import Outcome, batch_outcomes, call_outcome, missing_function
from .waiting import Limits, Verdict, supervise, tree_rss

T = TypeVar("T")


class ChildDied(RuntimeError):
    def __init__(self, returncode: int) -> None:
        self.returncode = returncode
        how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        super().__init__(f"the task's Python process died ({how})")


class ChildGone(RuntimeError):
    """The child was gone before the call reached it: the task never started."""


class Interrupted(RuntimeError):
    """The call was cut short (time or resource limit, cancel); the child was killed."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.value)
        self.verdict = verdict


def worker_lifeline() -> int:
    """Read end of a pipe whose write end only this worker process holds (never inherited):
    when the worker dies, even by SIGKILL, its children see EOF and kill themselves."""
    global _LIFELINE_READ
    with _LIFELINE_LOCK:
        if _LIFELINE_READ is None:
            _LIFELINE_READ, write_end = os.pipe()
            _KEEP.append(write_end)  # held open for the life of the process
        return _LIFELINE_READ


_LIFELINE_READ: int | None = None
_LIFELINE_LOCK = threading.Lock()
_KEEP: list[int] = []


LEDGER_BYTES = 1 << 20  # what a child may record before the worker reads it (see worker/lane.py)


class WarmProcess:
    def __init__(self, gpu_key: str, env: dict[str, str], ledger: bool = False) -> None:
        self.gpu_key = gpu_key
        parent, child = socket.socketpair()
        lifeline = worker_lifeline()
        # The ledger (for a worker with a fast lane): a pipe the child records its lane's
        # claims and results in, which the worker reads when it looks, never woken by it
        # (worker/lane.py).
        self.ledger, ledger_end = os.pipe() if ledger else (-1, -1)
        if ledger:
            try:
                fcntl.fcntl(self.ledger, fcntl.F_SETPIPE_SZ, LEDGER_BYTES)
            except OSError:
                pass  # the system's pipe size stands: the child tells the rest over the socket
            os.set_blocking(self.ledger, False)
        fds = [child.fileno(), lifeline] + ([ledger_end] if ledger else [])
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wq_redis.worker.child", str(child.fileno()), str(lifeline), str(ledger_end)],
                pass_fds=fds,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            if ledger:
                os.close(ledger_end)
        child.close()
        self.conn = Channel(parent)
        self.sandbox: str | None = None
        self.functions: set[str] = set()

    def call(self, message: RunCall, limits: Limits, cancel_fd: int, fetch_body: Callable[[], bytes | None]) -> Outcome:
        """Run one call; raises ChildGone, ChildDied, or Interrupted after killing the group.

        The child answers ``NeedBodies`` when it no longer holds the function (it keeps a
        bounded cache); the body is then fetched and the call sent again.
        """
        if limits.memory_mb:
            limits.baseline_rss = tree_rss(self.process.pid)
        reply = self._exchange(message, limits, cancel_fd)
        if isinstance(reply, NeedBodies):
            self.functions.discard(message.digest)
            body = fetch_body()
            if body is None:
                return missing_function(message.digest)
            reply = self._exchange(message._replace(body=body), limits, cancel_fd)
        self.functions.add(message.digest)
        assert isinstance(reply, CallDone), reply
        return call_outcome(reply)

    def sandbox_in(self, workdir: str) -> str:
        """This child's sandbox for batched calls, made on first use, removed with it."""
        if self.sandbox is None:
            self.sandbox = os.path.join(workdir, f"p{self.process.pid}")
            os.makedirs(self.sandbox, exist_ok=True)
        return self.sandbox

    def call_batch(
        self,
        message: RunBatch,
        cancel_fd: int,
        fetch_body: Callable[[str], bytes | None],
        while_running: Callable[[], None] | None = None,
    ) -> tuple[list[Outcome], list[float]]:
        """Run a batch of short calls (``Child.run_batch``): each call's outcome and
        seconds, in order.  ``while_running`` is called once the child has the batch,
        before waiting for it.

        Function bodies this child was never sent go with the message; when it evicted one
        since, it answers ``NeedBodies`` and the message is sent again with those bodies (a
        body missing from Redis fails the calls that need it, not the batch).
        """
        bodies = {}
        for digest in set(message.digests) - self.functions:
            body = fetch_body(digest)
            if body is not None:
                bodies[digest] = body
        reply = self._exchange(message._replace(bodies=bodies), Limits(), cancel_fd, while_running)
        if isinstance(reply, NeedBodies):
            outcomes, walls = self._without_missing(message, reply.digests, bodies, cancel_fd, fetch_body)
        else:
            assert isinstance(reply, BatchDone), reply
            outcomes, walls = batch_outcomes(reply), reply.walls
        self.functions.update(bodies)
        return outcomes, walls

    def _without_missing(
        self,
        message: RunBatch,
        needed: tuple[str, ...],
        bodies: dict[str, bytes],
        cancel_fd: int,
        fetch_body: Callable[[str], bytes | None],
    ) -> tuple[list[Outcome], list[float]]:
        """The batch sent again with the bodies the child asked for; the calls whose
        function is missing from Redis too fail without being sent."""
        for digest in needed:
            body = fetch_body(digest)
            if body is not None:
                bodies[digest] = body
        missing = set(needed) - set(bodies)
        keep = [index for index, digest in enumerate(message.digests) if digest not in missing]
        reply = self._exchange(message.only(keep, bodies), Limits(), cancel_fd)
        assert isinstance(reply, BatchDone), reply
        answers, answer_walls = batch_outcomes(reply), reply.walls
        answers.reverse()
        answer_walls.reverse()
        outcomes, walls = [], []
        for digest in message.digests:
            if digest in missing:
                outcomes.append(missing_function(digest))
                walls.append(0.0)
            else:
                outcomes.append(answers.pop())
                walls.append(answer_walls.pop())
        return outcomes, walls

    def _exchange(
        self,
        message: RunCall | RunBatch,
        limits: Limits,
        cancel_fd: int,
        while_running: Callable[[], None] | None = None,
    ) -> CallDone | BatchDone | NeedBodies:
        try:
            self.conn.send_message(message)
        except OSError:
            raise ChildGone() from None
        if while_running is not None:
            while_running()
        verdict = supervise(self.conn.fileno(), self.process.pid, cancel_fd, limits)
        if verdict is not Verdict.DONE:
            self.kill()
            raise Interrupted(verdict)
        try:
            reply = self.conn.recv_message()
        except (EOFError, OSError):
            raise ChildDied(self.process.wait()) from None
        if not isinstance(reply, CallDone | BatchDone | NeedBodies):
            raise TypeError(f"a warm child answered with {type(reply).__name__}")
        return reply

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        self.close()

    def close(self) -> None:
        self.conn.close()
        if self.ledger >= 0:
            os.close(self.ledger)
            self.ledger = -1
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.sandbox is not None:
            shutil.rmtree(self.sandbox, ignore_errors=True)
            self.sandbox = None


class WarmPool:
    """Idle warm children by GPU set; at most ``max_idle`` kept."""

    def __init__(self, max_idle: int, hide_gpus: bool, ledgers: bool = False) -> None:
        self.max_idle = max_idle
        self.hide_gpus = hide_gpus  # tasks that hold no GPU must not see the worker's GPUs
        self.ledgers = ledgers  # children get a ledger: the worker has a fast lane
        self._idle: list[WarmProcess] = []
        self._lock = threading.Lock()

    def acquire(self, gpu_ids: list[str]) -> WarmProcess:
        key = ",".join(gpu_ids)
        with self._lock:
            for index, proc in enumerate(self._idle):
                if proc.gpu_key == key:
                    del self._idle[index]
                    if proc.alive():
                        return proc
                    proc.close()
                    break
        env = dict(os.environ)
        if gpu_ids or self.hide_gpus:
            env["CUDA_VISIBLE_DEVICES"] = key
        return WarmProcess(key, env, self.ledgers)

    def call_with_child(self, gpu_ids: list[str], call: Callable[[WarmProcess], T]) -> T:
        """``call(child)`` with an idle child for these GPUs (a new one when none is idle),
        given back afterwards.  A child that had died while idle (ChildGone) is replaced
        once; one that dies during the call (ChildDied) is closed; one interrupted was
        killed already; after a SignatureError or TaskRefused (a function body
        refused or unreadable: raised between two messages) it is given back."""
        for attempt in range(2):
            proc = self.acquire(gpu_ids)
            try:
                result = call(proc)
            except ChildGone:
                proc.close()
                if attempt:
                    raise
                continue
            except ChildDied:
                proc.close()
                raise
            except (SignatureError, TaskRefused):  # a function body refused or unreadable
                self.release(proc)
                raise
            self.release(proc)
            return result
        raise ChildGone()

    def release(self, proc: WarmProcess) -> None:
        if not proc.alive():
            proc.close()
            return
        with self._lock:
            self._idle.append(proc)
            surplus = self._idle[: max(0, len(self._idle) - self.max_idle)]
            del self._idle[: len(surplus)]
        for old in surplus:
            old.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for proc in idle:
            proc.close()
