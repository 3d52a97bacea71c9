"""Worker processes on this machine: ``WorkQueue(name, local_workers=N)``'s fixed set, and the
ones a local ``wq.Factory`` adds and reaps as the queue's demand changes (factory.py)."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .server import tie_to_caller

log = logging.getLogger("wq_redis.embedded")

# options a local worker takes from ``local_worker_resources=`` (and a factory's attributes)
WORKER_OPTIONS = ("cores", "memory", "disk", "gpus", "tags", "lease_seconds", "idle_timeout", "workdir")
# After the stop's timeout, a worker handing its running tasks back has this long to exit
# (Work Queue's factory waits 30 s between asking its local workers to go and killing them).
HAND_BACK_SECONDS = 30.0


class LocalWorkers:
    """``wq-redis worker`` child processes that live as long as their owner (a queue or a factory).

    ``count`` start at once; ``add`` starts more and ``reap`` forgets those that exited (a
    factory's workers leave by their idle timeout).  ``options`` are further worker options
    (a factory's ``extra_options``), ``env`` further environment variables, ``prefix`` starts
    the worker names (``PREFIX<n>-<pid>@HOST``: unique among this process's pools).
    """

    def __init__(
        self,
        redis_url: str,
        queue: str,
        count: int = 0,
        resources: Mapping[str, Any] | None = None,
        *,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        prefix: str = "local",
        preexec: Callable[[], Callable[[], None] | None] = tie_to_caller,
    ) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        # Warnings and errors only: their start-up lines are noise in the user's program.
        # The resources were declared by the user of this very machine: taken as given,
        # without the warning a remote worker gives when they exceed what it detects.
        self._args = [
            sys.executable,
            "-m",
            "wq_redis",
            "worker",
            "--queue",
            queue,
            "--log-level",
            "warning",
            "--declared-as-given",
        ]
        self._options = [*worker_arguments(resources), *options]
        # Same machine, same modules: local workers import what the manager can import, so
        # functions of the user's own modules (pickled by reference) load on them too.
        path = [os.path.abspath(p or os.getcwd()) for p in sys.path]
        self._env = {
            **os.environ,
            **(env or {}),
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in path if os.path.isdir(p))),
            # the URL (and its password) travels in the environment, not on the command line
            "WQ_REDIS_URL": redis_url,
        }
        self._prefix = prefix
        self._preexec = preexec
        self._numbers = itertools.count()
        self.names: list[str] = []  # as the workers register (NAME@HOST), to wake them
        self.add(count)

    def add(self, count: int, options: Sequence[str] | None = None) -> int:
        """Start ``count`` more workers (with ``options`` instead of those given at creation:
        a factory's attributes changed meanwhile); returns how many started."""
        started = 0
        for _ in range(count):
            name = f"{self._prefix}{next(self._numbers)}-{os.getpid()}"
            try:
                process = subprocess.Popen(
                    [*self._args, *(self._options if options is None else options), "--name", name],
                    stdin=subprocess.DEVNULL,
                    env=self._env,
                    preexec_fn=self._preexec(),
                    # Out of the terminal's process group: a Ctrl-C reaches the manager alone,
                    # which then stops them once (SIGTERM), instead of SIGINT and then SIGTERM
                    # reading as two stop requests.  They still die with it (``preexec``: tie_to_caller).
                    start_new_session=True,
                )
            except OSError as exc:  # out of processes or memory: the next cycle tries again
                log.warning("could not start a local worker: %s", exc)
                break
            self.processes.append(process)
            self.names.append(f"{name}@{socket.gethostname()}")
            started += 1
        return started

    def reap(self) -> list[int]:
        """Forget the workers that exited; returns their exit codes."""
        codes = []
        for index in reversed(range(len(self.processes))):
            code = self.processes[index].poll()
            if code is not None:
                codes.append(code)
                del self.processes[index], self.names[index]
        return codes

    def alive(self) -> int:
        return sum(1 for p in self.processes if p.poll() is None)

    def stop(self, timeout: float = 10.0, wake: Callable[[str], None] | None = None) -> None:
        """SIGTERM (finish running tasks); after ``timeout`` a second SIGTERM to those still
        running tasks (hand them back to the queue: they run again at once, elsewhere, not
        after their lease runs out); SIGKILL whatever is left ``HAND_BACK_SECONDS`` later.

        ``wake(name)`` (the queue's ``ring_worker``) ends an idle worker's blocking wait
        for work at once, instead of after its ``block_seconds``."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        if wake is not None:
            for name in self.names:
                try:
                    wake(name)
                except Exception:  # Redis away: the wait ends by itself within block_seconds
                    break
        deadline = time.monotonic() + timeout
        late = [p for p in self.processes if not _exited(p, deadline)]
        for process in late:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + HAND_BACK_SECONDS
        for process in late:
            if not _exited(process, deadline):
                process.kill()
                process.wait()
        self.processes.clear()
        self.names.clear()


def _exited(process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether ``process`` exits by ``deadline`` (``time.monotonic``)."""
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def worker_arguments(resources: Mapping[str, Any] | None) -> list[str]:
    """``wq-redis worker`` options for ``{"cores": 4, "tags": ["a"], ...}`` (None: not given)."""
    args: list[str] = []
    for name, value in (resources or {}).items():
        if name not in WORKER_OPTIONS:
            raise ValueError(f"unknown local worker option {name!r}")
        if value is None:
            continue
        if name == "tags" and not isinstance(value, str):
            value = ",".join(value)
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args
