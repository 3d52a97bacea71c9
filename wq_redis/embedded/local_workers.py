"""Worker processes started by ``WorkQueue(name, local_workers=N)``: the laptop one-liner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .server import tie_to_caller


class LocalWorkers:
    """N ``wq-redis worker`` child processes that live as long as their queue object."""

    def __init__(self, redis_url: str, queue: str, count: int, resources: Mapping[str, Any] | None = None) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        # the URL (and its password) travels in the environment, not on the command line
        # Warnings and errors only: their start-up lines are noise in the user's program.
        # The resources were declared by the user of this very machine: taken as given,
        # without the warning a remote worker gives when they exceed what it detects.
        args = [
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
        for name, value in (resources or {}).items():
            if name not in ("cores", "memory", "disk", "gpus", "tags", "lease_seconds"):
                raise ValueError(f"unknown local worker option {name!r}")
            if name == "tags" and not isinstance(value, str):
                value = ",".join(value)
            args += [f"--{name.replace('_', '-')}", str(value)]
        # Same machine, same modules: local workers import what the manager can import, so
        # functions of the user's own modules (pickled by reference) load on them too.
        path = [os.path.abspath(p or os.getcwd()) for p in sys.path]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in path if os.path.isdir(p))),
            "WQ_REDIS_URL": redis_url,
        }
        self.names: list[str] = []  # as the workers register (NAME@HOST), to wake them
        for index in range(count):
            name = f"local{index}-{os.getpid()}"
            self.names.append(f"{name}@{socket.gethostname()}")
            self.processes.append(
                subprocess.Popen(
                    args + ["--name", name],
                    stdin=subprocess.DEVNULL,
                    env=env,
                    preexec_fn=tie_to_caller(),
                    # Out of the terminal's process group: a Ctrl-C reaches the manager alone,
                    # which then stops them once (SIGTERM), instead of SIGINT and then SIGTERM
                    # reading as two stop requests.  They still die with it (tie_to_caller).
                    start_new_session=True,
                )
            )

    def alive(self) -> int:
        return sum(1 for p in self.processes if p.poll() is None)

    def stop(self, timeout: float = 10.0, wake: Callable[[str], None] | None = None) -> None:
        """SIGTERM (finish running tasks), then SIGKILL whatever is left after ``timeout``.

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
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
