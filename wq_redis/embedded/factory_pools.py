"""Where a factory's workers run: local processes, or jobs on a batch system.

``FactoryThread`` asks a pool the same four things whatever the batch type: forget the
workers that ended (``reap``), how many of its own are still pending or running
(``count``), start more (``add``), and end them all when the factory stops (``stop``).
Neither kind of pool ever stops a worker during a run: surplus workers leave by their
idle timeout (``timeout``), so a busy worker is never killed to shrink the pool.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Protocol

from ..batch import BatchJobs, Resources
from .local_workers import LocalWorkers
from .server import tie_to_thread

log = logging.getLogger("wq_redis.embedded.factory")

# At stop, local workers finish their running tasks this long, then hand the rest back.
STOP_GRACE_SECONDS = 5.0


class WorkerSpecLike(Protocol):
    """What a pool reads of the factory's attributes (factory_thread.WorkerSpec)."""

    @property
    def python_env(self) -> str | None: ...

    def worker_options(self) -> list[str]: ...

    def resources(self) -> Resources: ...


class WorkerPool(Protocol):
    def reap(self) -> None: ...

    def count(self) -> int: ...

    def add(self, count: int, spec: WorkerSpecLike) -> int: ...

    def stop(self, wake: Callable[[str], None] | None) -> None: ...

    def pids(self) -> list[int]: ...


class LocalPool:
    """``wq-redis worker`` processes on this machine, tied to the factory's thread."""

    def __init__(self, url: str, queue: str, env: Mapping[str, str], prefix: str) -> None:
        self._queue = queue
        self._workers = LocalWorkers(url, queue, 0, env=env, prefix=prefix, preexec=tie_to_thread)

    def reap(self) -> None:
        for code in self._workers.reap():
            if code != 0:
                log.warning("a local worker of queue %r exited with status %d", self._queue, code)

    def count(self) -> int:
        return len(self._workers.processes)

    def add(self, count: int, spec: WorkerSpecLike) -> int:
        return self._workers.add(count, spec.worker_options())

    def stop(self, wake: Callable[[str], None] | None) -> None:
        self._workers.stop(STOP_GRACE_SECONDS, wake=wake)

    def pids(self) -> list[int]:
        return [p.pid for p in self._workers.processes]


class BatchPool:
    """Worker jobs on a batch system (wq_redis.batch): each runs ``wq-redis worker`` with
    the factory's options; the Redis URL goes in the submit command's environment."""

    def __init__(
        self,
        batch_type: str,
        url: str,
        queue: str,
        env: Mapping[str, str],
        scratch_dir: str | None,
        batch_options: list[str],
    ) -> None:
        self._queue = queue
        self._own_scratch = scratch_dir is None
        scratch = scratch_dir or tempfile.mkdtemp(prefix=f"wq-factory-{os.getuid()}-")
        # as for local workers: the factory's own modules import on the workers (a shared
        # file system, as batch clusters have), unless --python-env sets their environment
        path = [os.path.abspath(p or os.getcwd()) for p in sys.path]
        job_env = {
            **os.environ,
            **env,
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in path if os.path.isdir(p))),
            "WQ_REDIS_URL": url,
        }
        name = "wq-" + re.sub(r"[^A-Za-z0-9_-]", "_", queue)
        self.jobs = BatchJobs(batch_type, scratch, job_env, batch_options, job_name=name[:15])

    def reap(self) -> None:
        for job in self.jobs.poll():
            log.info("worker job %s of queue %r ended", job, self._queue)

    def count(self) -> int:
        return self.jobs.count()

    def add(self, count: int, spec: WorkerSpecLike) -> int:
        python = "python3" if spec.python_env else sys.executable
        command = [python, "-m", "wq_redis", "worker", "--queue", self._queue, "--log-level", "warning"]
        return self.jobs.submit(count, [*command, *spec.worker_options()], spec.resources(), setup=spec.python_env)

    def stop(self, wake: Callable[[str], None] | None) -> None:
        """Cancel the pending jobs, remove the running ones (their workers get SIGTERM:
        they finish or hand back their tasks), and remove the factory's files."""
        try:
            self.jobs.remove_all()
        finally:
            self.jobs.cleanup()
            if self._own_scratch:
                shutil.rmtree(self.jobs.scratch_dir, ignore_errors=True)

    def pids(self) -> list[int]:
        return []  # the batch system's, not ours
