"""Prometheus metrics of one worker: what it offers, what its tasks hold and use, its GPUs.

Opt-in with ``wq-redis worker --metrics-port``.  Each worker owns a fresh registry (never
prometheus_client's global one), so several workers in one process (tests, embedding)
do not mix.  Counters and histograms are updated by two hooks of the worker loop (a task
started, a task finished); the gauges are read at scrape time from the allocator, from
psutil (CPU actually used by the task processes) and from a GPU provider (NVML).

Names follow Prometheus' rules: base units (seconds, bytes), ratios 0-1, ``_total``
counters, no task ids as labels.  The queue is not a label here: one worker serves one
queue, and the exporter's service discovery attaches ``queue`` as a target label.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..protocol.codes import Result
from ..protocol.fields import MEASURED, RESULT, STARTED_B, SUBMITTED_B
from ..protocol.sizes import MB
from ..protocol.version import __version__
from .metrics_server import MetricsServer, serve
from .resources import GPU, Allocator, Capacity

log = logging.getLogger("wq_redis.worker")
PERCENT = 100.0  # NVML reports utilization in percent; Prometheus wants a ratio 0-1
# Tasks last from milliseconds to many hours; so do their waits in a busy queue.
TIME_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
    7200,
    14400,
    28800,
    86400,
)
GPU_PROVIDER_ENV = "WQ_GPU_PROVIDER"
MICROSECONDS = 1e6  # per second: the task hash's times are in us
# CPU use is averaged over at least this long: over less, a scrape would read the jitter of
# /proc's tick counts (two scrapes this close get the same value)
CPU_WINDOW_SECONDS = 1.0
_TASK_ID = re.compile(r"(:t:)\d+")


# -- GPUs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuSample:
    """One GPU as its provider sees it now."""

    index: int
    uuid: str
    model: str
    utilization: float  # 0-1, share of the last sample period a kernel ran
    memory_used: int  # bytes
    memory_total: int  # bytes


class GpuProvider(Protocol):
    def sample(self) -> list[GpuSample]: ...

    def close(self) -> None: ...


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlProvider:
    """GPU samples from NVML (nvidia-ml-py).  No driver, no GPU, no permission or a failing
    board all mean fewer (or no) samples, never an exception.  ``nvml`` is the pynvml
    module, or a stand-in with the same functions (tests)."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._state = "new"  # new, ready, failed (NVML is not tried again)
        self._lock = threading.Lock()

    def _ready(self) -> bool:
        if self._state == "new":
            try:
                if self._nvml is None:
                    import pynvml

                    self._nvml = pynvml
                self._nvml.nvmlInit()
                self._state = "ready"
            except Exception as exc:
                log.info("NVML unavailable (%s): no per-GPU metrics", exc)
                self._state = "failed"
        return self._state == "ready"

    def sample(self) -> list[GpuSample]:
        with self._lock:
            if not self._ready():
                return []
            nvml = self._nvml
            try:
                count = nvml.nvmlDeviceGetCount()
            except Exception as exc:
                log.warning("NVML failed to count GPUs: %s", exc)
                return []
            samples = []
            for index in range(count):
                try:
                    handle = nvml.nvmlDeviceGetHandleByIndex(index)
                    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                    samples.append(
                        GpuSample(
                            index,
                            _text(nvml.nvmlDeviceGetUUID(handle)),
                            _text(nvml.nvmlDeviceGetName(handle)),
                            nvml.nvmlDeviceGetUtilizationRates(handle).gpu / PERCENT,
                            int(memory.used),
                            int(memory.total),
                        )
                    )
                except Exception as exc:  # one board failing (fallen off the bus) hides only that one
                    log.warning("NVML failed on GPU %d: %s", index, exc)
            return samples

    def close(self) -> None:
        with self._lock:
            if self._state == "ready":
                try:
                    self._nvml.nvmlShutdown()
                except Exception:
                    pass
                self._state = "new"


def load_gpu_provider(spec: str | None = None) -> GpuProvider:
    """The provider named by ``module:callable`` (``$WQ_GPU_PROVIDER``; for GPUs NVML does
    not see), else NVML."""
    spec = spec if spec is not None else os.environ.get(GPU_PROVIDER_ENV, "")
    if not spec:
        return NvmlProvider()
    module, _, attr = spec.partition(":")
    factory: Callable[[], GpuProvider] = getattr(importlib.import_module(module), attr or "provider")
    return factory()


def match_gpus(gpus: list[GPU], samples: list[GpuSample]) -> list[GpuSample]:
    """Samples of the worker's own GPUs: by UUID where the worker knows it, else by index."""
    by_uuid = {s.uuid: s for s in samples}
    by_index = {s.index: s for s in samples}
    found = [by_uuid.get(g.uuid) if g.uuid else by_index.get(g.index) for g in gpus]
    return [s for s in found if s is not None]


# -- CPU -----------------------------------------------------------------------------
class TaskCpuMeter:
    """CPU time used by the worker's task processes: every descendant of the worker, live
    ones read from /proc and exited ones through the worker's reaped-children times
    (command tasks are waited for by the worker, so their whole tree counts)."""

    def __init__(self, pid: int | None = None, min_window: float = CPU_WINDOW_SECONDS) -> None:
        self._process = psutil.Process(pid)
        self._min_window = min_window
        self._last = (time.monotonic(), self.total())
        self._ratio = 0.0
        self._lock = threading.Lock()

    def total(self) -> float:
        own = self._process.cpu_times()
        total = own.children_user + own.children_system
        for child in self._process.children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.Error:  # exited meanwhile: counted once the worker reaps it
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def utilization(self, cores: int) -> float:
        """Share of ``cores`` the task processes kept busy since the previous reading (at
        least ``min_window`` seconds ago; a closer second scrape gets the same value)."""
        with self._lock:
            now = time.monotonic()
            then, used_then = self._last
            if now - then >= self._min_window:
                used = max(self.total(), used_then)  # a process caught between states
                self._ratio = (used - used_then) / ((now - then) * max(cores, 1))
                self._last = (now, used)
            return self._ratio


# -- the worker's metrics --------------------------------------------------------------
class _ScrapeCollector(Collector):
    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics.collect_gauges()


class WorkerMetrics:
    """The registry of one worker and the hooks that feed it.

    >>> metrics = WorkerMetrics("7@host", capacity, allocator, tags=[])
    >>> metrics.task_started(claimed.fields)
    >>> metrics.task_finished(result_fields)
    >>> address = metrics.serve("0.0.0.0", range(9750, 9800))
    """

    def __init__(
        self,
        worker: str,
        capacity: Capacity,
        allocator: Allocator,
        tags: list[str],
        gpu_provider: GpuProvider | None = None,
        host: str | None = None,
        running: Callable[[], int] = lambda: 0,
        healthy: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        self.worker, self.capacity, self.allocator = worker, capacity, allocator
        self.tags = ",".join(tags)
        self.host = host or worker.partition("@")[2] or os.uname().nodename
        self.gpu_provider = gpu_provider if gpu_provider is not None else load_gpu_provider()
        self.running = running
        self.healthy = healthy or (lambda: (True, "ok"))
        self.cpu = TaskCpuMeter()
        self.server: MetricsServer | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("wq_tasks_started", "Task attempts this worker started.", registry=r)
        self.completed = Counter(
            "wq_tasks_completed",
            "Task attempts this worker finished, by result code "
            "(Work Queue's names, lower case; 'cancelled' when cancelled or its lease was lost).",
            ["result"],
            registry=r,
        )
        for result in [r.name.lower() for r in Result] + ["cancelled"]:
            self.completed.labels(result)  # every result present from the start: rates and ratios see 0, not nothing
        self.cpu_seconds = Counter(
            "wq_task_cpu_seconds",
            "CPU time (user + system, child processes included) of the tasks this worker finished.",
            registry=r,
        )
        self.duration = Histogram(
            "wq_task_duration_seconds", "Wall time of task attempts on this worker.", buckets=TIME_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "wq_task_queue_wait_seconds",
            "Time from a task's submission to the start of its attempt on this worker.",
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self.broken_keys = Counter(
            "wq_worker_broken_queue_keys",
            "Claims that found a key of the queue they "
            "could not read (a wrong type written by another client) and skipped it, by "
            "key (a task's id shown as *).",
            ["key"],
            registry=r,
        )
        r.register(_ScrapeCollector(self))

    # -- hooks of the worker loop ------------------------------------------------------
    def task_started(self, fields: dict[bytes, bytes]) -> None:
        """A claimed attempt starts; ``fields`` is its task hash (SUBMITTED us, STARTED us)."""
        self.started.inc()
        try:
            wait = (int(fields[STARTED_B]) - int(fields[SUBMITTED_B])) / MICROSECONDS
        except (KeyError, ValueError):
            return
        self.queue_wait.observe(max(wait, 0.0))  # the manager's clock may run ahead of Redis'

    def broken_key(self, key: str) -> None:
        """A claim skipped ``key`` (wrong type).  Task keys are counted under one label
        (``wq:{Q}:t:*``): a label per task id would grow without bound."""
        self.broken_keys.labels(_TASK_ID.sub(r"\1*", key)).inc()

    def task_finished(self, fields: dict[str, Any] | None) -> None:
        """An attempt ended: its result fields, or None when it was cancelled or lost."""
        try:
            self._count_result(fields)
        except Exception:  # metrics must never cost the worker a result
            log.exception("could not count a finished task in the metrics")

    def _count_result(self, fields: dict[str, Any] | None) -> None:
        if fields is None:
            self.completed.labels("cancelled").inc()
            return
        try:
            result = Result(int(fields.get(RESULT, Result.UNKNOWN))).name.lower()
        except ValueError:
            result = "unknown"
        self.completed.labels(result).inc()
        measured = json.loads(fields.get(MEASURED) or "{}")
        self.cpu_seconds.inc(max(float(measured.get("cpu_time", 0.0)), 0.0))
        if "wall_time" in measured:
            self.duration.observe(max(float(measured["wall_time"]), 0.0))

    # -- scrape time -------------------------------------------------------------------
    def collect_gauges(self) -> Iterable[Metric]:
        total, used = self.capacity.as_dict(), self.allocator.in_use()
        for name, unit, scale, what in (
            ("cores", "", 1, "Cores"),
            ("memory", "_bytes", MB, "Memory"),
            ("disk", "_bytes", MB, "Disk"),
            ("gpus", "", 1, "GPUs"),
        ):
            yield GaugeMetricFamily(
                f"wq_worker_{name}{unit}", f"{what} this worker offers to tasks.", value=total[name] * scale
            )
            yield GaugeMetricFamily(
                f"wq_worker_{name}_in_use{unit}",
                f"{what} held by this worker's running tasks.",
                value=used[name] * scale,
            )
        yield GaugeMetricFamily(
            "wq_worker_tasks_running", "Task attempts running on this worker.", value=self.running()
        )
        yield GaugeMetricFamily(
            "wq_worker_cpu_utilization_ratio",
            "CPU time the task processes used per second, over the worker's cores (measured, not allocated; "
            "above 1 when tasks use more cores than offered).",
            value=self.cpu.utilization(self.capacity.cores),
        )
        info = GaugeMetricFamily(
            "wq_worker_info",
            "This worker: name, host, wq-redis version, tags it takes (empty: every tag).",
            labels=["worker", "host", "version", "tags"],
        )
        info.add_metric([self.worker, self.host, __version__, self.tags], 1)
        yield info
        yield from self._gpu_gauges()

    def _gpu_gauges(self) -> Iterable[Metric]:
        if not self.capacity.gpus:
            return
        try:
            samples = match_gpus(self.capacity.gpus, self.gpu_provider.sample())
        except Exception as exc:  # a provider must never break the scrape
            log.warning("GPU provider failed: %s", exc)
            samples = []
        labels = ["gpu", "uuid", "model"]
        util = GaugeMetricFamily(
            "wq_gpu_utilization_ratio", "Share of the last sample period a kernel ran on the GPU (NVML).", labels=labels
        )
        used = GaugeMetricFamily("wq_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=labels)
        size = GaugeMetricFamily("wq_gpu_memory_total_bytes", "GPU memory installed (NVML).", labels=labels)
        for s in samples:
            key = [str(s.index), s.uuid, s.model]
            util.add_metric(key, s.utilization)
            used.add_metric(key, s.memory_used)
            size.add_metric(key, s.memory_total)
        if samples:
            yield from (util, used, size)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- HTTP ----------------------------------------------------------------------------
    def serve(self, bind: str, ports: range, advertise: str | None = None) -> str:
        """Serve ``/metrics`` and ``/healthz``; returns the ``host:port`` to advertise."""
        self.server = serve(self.registry, bind, ports, {"/healthz": self._health}, advertise, name="metrics")
        return self.server.address

    def _health(self) -> tuple[int, str, bytes]:
        ok, reason = self.healthy()
        body = json.dumps({"status": "ok" if ok else "unhealthy", "reason": reason, "worker": self.worker})
        return (200 if ok else 503), "application/json", body.encode()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.gpu_provider.close()
