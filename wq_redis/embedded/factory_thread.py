"""The thread behind a running ``wq.Factory`` (and ``wq-redis factory``): once a cycle, one
read of the queue's demand, then as many new workers as Work Queue's rule asks for
(factory_demand.py), started by the factory's pool (factory_pools.py): local processes or
batch jobs.

The thread starts every worker itself and stops them all before it ends: a local worker
dies with the thread that started it (``tie_to_thread``), so none outlives a crashed
program; batch jobs are removed when the thread ends.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from ..batch import Resources
from ..client.stats import stats_from_snapshot
from ..protocol.connection import open_client, safe_url
from ..protocol.store import WORKER_TIMEOUT_MS, QueueStore
from .factory_demand import (
    DEFAULT_MAX_WORKERS,
    DEFAULT_MIN_WORKERS,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKERS_PER_CYCLE,
    Sizing,
    demand_from_stats,
    workers_needed,
    workers_to_start,
)
from .factory_pools import WorkerPool
from .local_workers import worker_arguments

log = logging.getLogger("wq_redis.embedded.factory")

# Work Queue's factory looks every 30 s, for batch jobs that take minutes to start; local
# workers start in about a second, and the one read a cycle costs Redis little.
CYCLE_SECONDS = 2.0
# Batch jobs take longer to start, and each cycle runs the system's status command once.
BATCH_CYCLE_SECONDS = 10.0
__all__ = ["BATCH_CYCLE_SECONDS", "CYCLE_SECONDS", "FactoryThread", "WorkerSpec"]


@dataclass(frozen=True)
class WorkerSpec:
    """What the factory's attributes say, read once per cycle."""

    sizing: Sizing
    timeout: int = DEFAULT_TIMEOUT
    factory_timeout: int = 0
    scratch_dir: str | None = None
    tags: str | None = None  # the workers' --tags (comma-separated)
    python_env: str | None = None  # a shell line that activates the batch workers' environment
    local: bool = True  # local worker processes (else batch jobs)
    extra: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(
        cls, opts: Mapping[str, Any], extra: list[str], env: Mapping[str, str], local: bool = True
    ) -> WorkerSpec:
        def size(name: str) -> int | None:  # Work Queue's -1 (any negative): not set
            value = opts.get(name)
            return value if value is not None and value >= 0 else None

        sizing = Sizing(
            min_workers=opts.get("min_workers", DEFAULT_MIN_WORKERS),
            max_workers=opts.get("max_workers", DEFAULT_MAX_WORKERS),
            workers_per_cycle=opts.get("workers_per_cycle", DEFAULT_WORKERS_PER_CYCLE),
            tasks_per_worker=opts.get("tasks_per_worker"),
            cores=size("cores"),
            memory=size("memory"),
            disk=size("disk"),
            gpus=size("gpus"),
        )
        return cls(
            sizing=sizing,
            timeout=opts.get("timeout", DEFAULT_TIMEOUT),
            factory_timeout=opts.get("factory_timeout", 0),
            scratch_dir=opts.get("scratch_dir"),
            tags=_tags(opts.get("tags")),
            python_env=opts.get("python_env") or None,
            local=local,
            extra=tuple(extra),
            env=dict(env),
        )

    def worker_options(self) -> list[str]:
        """The ``wq-redis worker`` options of a worker started now."""
        s = self.sizing
        declared = {"cores": s.cores, "memory": s.memory, "disk": s.disk, "gpus": s.gpus}
        return [
            *worker_arguments({**declared, "idle_timeout": self.timeout, "tags": self.tags, "workdir": self.workdir}),
            *self.extra,
        ]

    @property
    def workdir(self) -> str | None:
        """Local workers keep their sandboxes under ``scratch_dir``; a batch worker's
        directory is the node's own (the factory's scratch directory holds its job files)."""
        return self.scratch_dir if self.local else None

    def resources(self) -> Resources:
        """What one worker job asks its batch system for."""
        s = self.sizing
        return Resources(cores=s.cores, memory=s.memory, disk=s.disk, gpus=s.gpus)


def _tags(value: Any) -> str | None:
    if not value:
        return None
    return value if isinstance(value, str) else ",".join(str(v) for v in value)


class FactoryThread:
    """Starts workers (through its pool) as the queue needs them; ``stop`` ends them all."""

    def __init__(
        self,
        url: str,
        queue: str,
        spec: WorkerSpec,
        pool: WorkerPool,
        tasks_left: Callable[[], int] = lambda: 0,
        cycle_seconds: float = CYCLE_SECONDS,
    ) -> None:
        self._client = open_client(url)  # RedisUnavailable now, in the caller's start()
        self._store = QueueStore(self._client, queue)
        self._url, self._queue = url, queue
        self._tasks_left = tasks_left
        self._cycle_seconds = cycle_seconds
        if spec.scratch_dir:
            os.makedirs(spec.scratch_dir, exist_ok=True)
        self._spec = spec
        self._cond = threading.Condition()
        self._stopping = False
        self.cycles = 0  # cycles done: tests wait for the next one instead of for time
        self._workers = pool
        self._thread = threading.Thread(target=self._run, name=f"wq-factory-{queue}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def alive(self) -> int:
        """The factory's workers not known to have ended (local: alive; batch: pending or running)."""
        with self._cond:
            return self._workers.count()

    def pids(self) -> list[int]:
        with self._cond:
            return self._workers.pids()

    def update(self, spec: WorkerSpec) -> None:
        """New attributes: a cycle runs at once with them."""
        with self._cond:
            self._spec = spec
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        else:  # never started
            self._workers.stop(None)
        self._client.close()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        last_seen, told = time.monotonic(), False
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    spec = self._spec
                try:
                    self._cycle(spec)
                    last_seen, told = time.monotonic(), False
                except redis.RedisError as exc:
                    if not told:
                        log.warning(
                            "factory of queue %r cannot read Redis at %s: %s", self._queue, safe_url(self._url), exc
                        )
                        told = True
                    if spec.factory_timeout and time.monotonic() - last_seen > spec.factory_timeout:
                        log.error("no Redis for %d s (factory_timeout): stopping the factory", spec.factory_timeout)
                        return
                except Exception:  # a bug must not leave the workers unmanaged: log, go on
                    log.exception("factory cycle of queue %r failed", self._queue)
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(self._cycle_seconds)
        finally:
            with self._cond:
                self._stopping = True
            self._workers.stop(self._store.ring_worker)

    def _cycle(self, spec: WorkerSpec) -> None:
        stats = stats_from_snapshot(self._store.snapshot(WORKER_TIMEOUT_MS))
        with self._cond:
            self._workers.reap()
            started = self._workers.count()
        demand = demand_from_stats(stats, self._tasks_left(), tags=spec.tags)
        needed = workers_needed(demand, spec.sizing)
        new = workers_to_start(needed, started, stats.workers_connected, spec.sizing.workers_per_cycle)
        (log.info if new > 0 else log.debug)(
            "queue %r: %d waiting, %d running; workers: %d needed, %d started, %d connected, %d to start",
            self._queue,
            demand.tasks_waiting,
            demand.tasks_on_workers,
            needed,
            started,
            stats.workers_connected,
            new,
        )
        if new > 0:
            with self._cond:
                self._workers.add(new, spec)
        self.cycles += 1
