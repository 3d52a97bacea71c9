"""Worker processes started by ``WorkQueue(name, local_workers=N)``: the laptop one-liner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any, Mapping

from .server import tie_to_caller


class LocalWorkers:
    """N ``wq-redis worker`` child processes that live as long as their queue object."""

    def __init__(self, redis_url: str, queue: str, count: int, resources: Mapping[str, Any] | None = None) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        # the URL (and its password) travels in the environment, not on the command line
        args = [sys.executable, "-m", "wq_redis", "worker", "--queue", queue]
        for name, value in (resources or {}).items():
            if name not in ("cores", "memory", "disk", "gpus", "tags", "lease_seconds"):
                raise ValueError(f"unknown local worker option {name!r}")
            if name == "tags" and not isinstance(value, str):
                value = ",".join(value)
            args += [f"--{name.replace('_', '-')}", str(value)]
        # Same machine, same modules: local workers import what the manager can import, so
        # functions of the user's own modules (pickled by reference) load on them too.
        path = [os.path.abspath(p or os.getcwd()) for p in sys.path]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in path if os.path.isdir(p))),
               "WQ_REDIS_URL": redis_url}
        for index in range(count):
            self.processes.append(subprocess.Popen(
                args + ["--name", f"local{index}-{os.getpid()}"], stdin=subprocess.DEVNULL, env=env,
                preexec_fn=tie_to_caller(),  # type: ignore[arg-type]
            ))

    def alive(self) -> int:
        return sum(1 for p in self.processes if p.poll() is None)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (finish running tasks), then SIGKILL whatever is left after ``timeout``."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
