"""The thread behind a running ``wq.Factory``: once a cycle, one read of the queue's demand,
then as many new local workers as Work Queue's rule asks for (factory_demand.py).

The thread starts every worker itself and stops them all before it ends: a worker dies
with the thread that started it (``tie_to_thread``), so none outlives a crashed program.
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
from .local_workers import LocalWorkers, worker_arguments
from .server import tie_to_thread

log = logging.getLogger("wq_redis.embedded.factory")

# Work Queue's factory looks every 30 s, for batch jobs that take minutes to start; local
# workers start in about a second, and the one read a cycle costs Redis little.
CYCLE_SECONDS = 2.0
# At stop, workers finish their running tasks this long, then hand the rest back to the queue.
STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class WorkerSpec:
    """What the factory's attributes say, read once per cycle."""

    sizing: Sizing
    timeout: int = DEFAULT_TIMEOUT
    factory_timeout: int = 0
    scratch_dir: str | None = None
    extra: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(cls, opts: Mapping[str, Any], extra: list[str], env: Mapping[str, str]) -> WorkerSpec:
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
            extra=tuple(extra),
            env=dict(env),
        )

    def worker_options(self) -> list[str]:
        """The ``wq-redis worker`` options of a worker started now."""
        s = self.sizing
        declared = {"cores": s.cores, "memory": s.memory, "disk": s.disk, "gpus": s.gpus}
        return [
            *worker_arguments({**declared, "idle_timeout": self.timeout, "workdir": self.scratch_dir}),
            *self.extra,
        ]


class FactoryThread:
    """Starts local workers as the queue needs them; ``stop`` stops them all."""

    def __init__(
        self,
        url: str,
        queue: str,
        spec: WorkerSpec,
        env: Mapping[str, str],
        prefix: str,
        tasks_left: Callable[[], int] = lambda: 0,
    ) -> None:
        self._client = open_client(url)  # RedisUnavailable now, in the caller's start()
        self._store = QueueStore(self._client, queue)
        self._url, self._queue = url, queue
        self._tasks_left = tasks_left
        if spec.scratch_dir:
            os.makedirs(spec.scratch_dir, exist_ok=True)
        self._spec = spec
        self._cond = threading.Condition()
        self._stopping = False
        self.cycles = 0  # cycles done: tests wait for the next one instead of for time
        self._workers = LocalWorkers(url, queue, 0, env={**env, **spec.env}, prefix=prefix, preexec=tie_to_thread)
        self._thread = threading.Thread(target=self._run, name=f"wq-factory-{queue}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def alive(self) -> int:
        with self._cond:
            return self._workers.alive()

    def pids(self) -> list[int]:
        with self._cond:
            return [p.pid for p in self._workers.processes]

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
            self._workers.stop(STOP_GRACE_SECONDS)
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
                        self._cond.wait(CYCLE_SECONDS)
        finally:
            with self._cond:
                self._stopping = True
            self._workers.stop(STOP_GRACE_SECONDS, wake=self._store.ring_worker)

    def _cycle(self, spec: WorkerSpec) -> None:
        stats = stats_from_snapshot(self._store.snapshot(WORKER_TIMEOUT_MS))
        with self._cond:
            for code in self._workers.reap():
                if code != 0:
                    log.warning("a local worker of queue %r exited with status %d", self._queue, code)
            started = len(self._workers.processes)
        needed = workers_needed(demand_from_stats(stats, self._tasks_left()), spec.sizing)
        new = workers_to_start(needed, started, stats.workers_connected, spec.sizing.workers_per_cycle)
        (log.info if new > 0 else log.debug)(
            "queue %r: %d waiting, %d running; workers: %d needed, %d started, %d connected, %d to start",
            self._queue,
            stats.tasks_waiting,
            stats.tasks_on_workers,
            needed,
            started,
            stats.workers_connected,
            new,
        )
        if new > 0:
            with self._cond:
                self._workers.add(new, spec.worker_options())
        self.cycles += 1
