"""One guardian process per worker: a command task cannot outlive its worker.

The guardian holds the read end of the worker's lifeline pipe (see ``pool.worker_lifeline``;
only the worker holds the write end).  The worker tells it, over a control pipe, each
command task it is about to start, the pid of its process group once started, and when
the group is gone.  When the lifeline closes (the worker died, even by SIGKILL) the
guardian SIGKILLs every group still registered and exits.  This replaces a background
guard subshell per task (two extra forks per task).

Records on the control pipe, each ended by a NUL byte (paths cannot hold one)::

    E<sandbox>        a task is about to start in this sandbox (sent before the fork)
    S<pid> <sandbox>  it started: its process group is <pid> (start_new_session)
    F<sandbox>        its group was killed and reaped: forget it

The window between the fork and the ``S`` record is closed too: a task in it has an ``E``
record and no pid yet, so the guardian looks for it among all processes, by the
``WQ_SANDBOX`` variable of its environment or by its working directory (both the sandbox
at exec), and kills that process' group.  The lifeline's write end is close-on-exec and
every fork of the worker holds a copy of it until it execs, so when the guardian sees the
lifeline close, every task process has exec'd: its environment and directory are the
task's.  What remains: a task whose environment drops ``WQ_SANDBOX`` *and* that leaves its
sandbox directory within the microseconds between its exec and the worker's ``S`` record,
in a worker SIGKILLed exactly then; and, as before, processes that leave the task's
process group (setsid) are not followed.

The guardian is ``python -I -S`` on this file (standard library only: it starts fast and
stays small), in its own session, so signals meant for the worker's terminal miss it.
It reads the control pipe in batches (it only needs the records when the worker dies), so
a busy worker costs it a few wake-ups a second, an idle one none.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import sys
import threading

BATCH_SECONDS = 0.05  # the guardian reads records at most this often (the pipe holds the rest)
F_SETPIPE_SZ = 1031  # Linux's fcntl command that resizes a pipe (fcntl.F_SETPIPE_SZ, where Python defines it)
PIPE_BYTES = 1 << 20  # room for the records between two reads, under any task rate
READ_CHUNK_BYTES = 1 << 16  # one read of the pipe: a default pipe's whole 64 KiB


# -- the worker's side -------------------------------------------------------------------
class Guardian:
    """The worker's handle on its guardian process, started on first use."""

    def __init__(self, lifeline: int) -> None:
        self.lifeline = lifeline
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._write_fd = -1
        self._owner = 0  # pid that started the guardian (a forked copy starts its own)
        self._live: dict[bytes, int | None] = {}  # sandbox -> pid of its group (None: not yet)

    def expect(self, sandbox: str) -> None:
        """Before the task's fork: from now on the guardian looks for it if the worker dies."""
        key = os.fsencode(sandbox)
        with self._lock:
            self._live[key] = None
            self._send(b"E" + key + b"\0")

    def started(self, sandbox: str, pid: int) -> None:
        key = os.fsencode(sandbox)
        with self._lock:
            self._live[key] = pid
            self._send(b"S%d %s\0" % (pid, key))

    def finished(self, sandbox: str) -> None:
        """After the task's group was killed and its leader reaped."""
        key = os.fsencode(sandbox)
        with self._lock:
            if self._live.pop(key, 0) != 0:
                self._send(b"F" + key + b"\0")

    @property
    def pid(self) -> int | None:
        return self._pid

    def _send(self, record: bytes) -> None:
        if self._pid is None or self._owner != os.getpid():
            self._start()
            return  # _start sent every live record, this one included
        try:
            os.write(self._write_fd, record)  # under PIPE_BUF: never interleaved, never partial
        except BrokenPipeError:  # the guardian died (killed by someone): start another
            self._start()

    def _start(self) -> None:
        if self._pid is not None and self._owner == os.getpid():
            os.close(self._write_fd)
            os.waitpid(self._pid, 0)  # it is gone (its pipe broke)
        read_fd, write_fd = os.pipe()
        try:
            fcntl.fcntl(write_fd, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # the default 64 KiB still holds ~500 tasks' records between two reads
        # posix_spawn, not Popen: a Popen object still running at exit warns (the guardian
        # outlives the worker by design).  Its two descriptors are dup2'ed above both
        # sources, so neither clobbers the other; dup2 leaves them open across the exec.
        lifeline, control = max(self.lifeline, read_fd) + 1, max(self.lifeline, read_fd) + 2
        try:
            self._pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(lifeline), str(control)],
                os.environ,
                setsid=True,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, self.lifeline, lifeline),
                    (os.POSIX_SPAWN_DUP2, read_fd, control),
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                ],
            )
        finally:
            os.close(read_fd)
        self._write_fd, self._owner = write_fd, os.getpid()
        records = b"".join(
            b"E" + key + b"\0" if pid is None else b"S%d %s\0" % (pid, key) for key, pid in self._live.items()
        )
        if records:
            os.write(write_fd, records)


_GUARDIAN: Guardian | None = None
_GUARDIAN_LOCK = threading.Lock()


def guardian(lifeline: int) -> Guardian:
    """This worker's guardian (one per process, sharing the worker's lifeline)."""
    global _GUARDIAN
    if _GUARDIAN is None:
        with _GUARDIAN_LOCK:
            if _GUARDIAN is None:
                _GUARDIAN = Guardian(lifeline)
    return _GUARDIAN


# -- the guardian process ----------------------------------------------------------------
def _apply(live: dict[bytes, int | None], data: bytes) -> bytes:
    """Apply the complete records in ``data``; return the incomplete rest."""
    *records, rest = data.split(b"\0")
    for record in records:
        kind, body = record[:1], record[1:]
        if kind == b"E":
            live[body] = None
        elif kind == b"S":
            pid, _, key = body.partition(b" ")
            live[key] = int(pid)
        elif kind == b"F":
            live.pop(body, None)
    return rest


def _find(sandboxes: set[bytes]) -> set[int]:
    """Pids of the session leaders started in one of these sandboxes (by environment or
    working directory).  Only session leaders: every task starts a session, and a shell
    someone opened in a sandbox keeps its own group out of this."""
    wanted_env = {b"WQ_SANDBOX=" + s for s in sandboxes}
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rpartition(b")")[2].split()
            if int(fields[3]) != int(name):  # (state, ppid, pgrp, session, ...): not a session leader
                continue
            with open(f"/proc/{name}/environ", "rb") as handle:
                if wanted_env.intersection(handle.read().split(b"\0")):
                    found.add(int(name))
                    continue
            if os.fsencode(os.readlink(f"/proc/{name}/cwd")) in sandboxes:
                found.add(int(name))
        except (OSError, ValueError, IndexError):  # gone, or not ours to read
            pass
    return found


def _kill_all(live: dict[bytes, int | None]) -> None:
    groups = {pid for pid in live.values() if pid is not None}
    unknown = {key for key, pid in live.items() if pid is None}
    if unknown:
        for pid in _find(unknown):
            try:
                groups.add(os.getpgid(pid))
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    groups.discard(os.getpgid(0))
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass


def serve(lifeline: int, control: int) -> None:
    live: dict[bytes, int | None] = {}
    pending = b""
    os.set_blocking(control, False)
    poller = select.poll()
    poller.register(lifeline, select.POLLIN)  # nothing is ever written: readable means closed
    poller.register(control, select.POLLIN)
    alive = True
    while alive:
        events = dict(poller.poll())
        if lifeline in events:
            alive = False
        if control in events or not alive:
            while True:
                try:
                    chunk = os.read(control, READ_CHUNK_BYTES)
                except OSError as exc:
                    if exc.errno == errno.EAGAIN:
                        break
                    raise
                if not chunk:  # every write end closed: the worker is gone too
                    alive = False
                    break
                pending = _apply(live, pending + chunk)
        if alive:
            select.select([lifeline], [], [], BATCH_SECONDS)  # gather records; still watch the lifeline
    _kill_all(live)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
