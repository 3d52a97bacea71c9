"""``wq-redis exporter``: queue-level Prometheus metrics and service discovery, read from Redis.

Queue metrics (waiting, running, counters, workers by state) are exported once, by this
process, not by every worker: N workers each exporting the queue's depth would make every
sum N times too large and load Redis N times per scrape (dask#8544).

A custom collector reads Redis at scrape time, one Lua call per queue (``export.lua``,
read-only and bounded).  Queues are found by SCAN (cached for ``discover_seconds``) unless
named.  ``/sd`` serves Prometheus' ``http_sd_configs`` format: the metrics addresses live
workers recorded in Redis, with the queue as a target label.

>>> exporter = QueueExporter(open_client("redis://localhost:6379"))
>>> exporter.serve("0.0.0.0", range(9750, 9751))
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..client.shards import open_store
from ..protocol.cluster import is_cluster, used_memory
from ..protocol.partitions import stored_shards
from ..protocol.resources import parse_class, split_member
from ..protocol.store import ExportSnapshot, QueueStore, find_queues
from ..worker.metrics_server import MetricsServer, json_route, serve

log = logging.getLogger("wq_redis.ops.exporter")
TASK_ID = re.compile(r"(:t:)\d+")  # task keys are labelled without their id: one label, not one per task
# Defaults of QueueExporter (and of `wq-redis exporter`'s options, which write them again so
# that --help does not import this module; tests/test_status.py keeps the two equal).
DISCOVER_SECONDS = 30.0  # how long a SCAN's list of queues is reused
STALE_SECONDS = 10.0  # a worker silent this long is unresponsive, and leaves /sd
# Finished tasks whose result sizes export.lua reads per queue and scrape (it scales the sum
# up when more wait): bounds how long a scrape holds Redis.
RESULT_SAMPLE = 1000
WORKER_STATES = ("idle", "busy", "draining", "unresponsive")
# counter in the queue's stats hash -> (metric name without _total, help)
COUNTERS = {
    "submitted": ("wq_tasks_submitted", "Tasks submitted to the queue."),
    "dispatched": ("wq_tasks_dispatched", "Task attempts handed to workers (claims)."),
    "retrieved": ("wq_tasks_retrieved", "Finished tasks the manager retrieved."),
    "failed": ("wq_tasks_failed", "Retrieved tasks whose result was not SUCCESS."),
    "canceled": ("wq_tasks_cancelled", "Tasks cancelled."),
    "requeued": ("wq_tasks_requeued", "Attempts whose lease expired and whose task was queued again."),
    "lost_leases": ("wq_leases_lost", "Leases that expired: the worker died, hung or was cut off."),
    "late_results": ("wq_late_results", "Results dropped because their attempt had lost its lease."),
    "workers_lost": ("wq_workers_lost", "Workers given up for dead (heartbeat stopped)."),
}


@dataclass
class WorkerView:
    name: str
    state: str
    heartbeat_age: float  # seconds
    metrics: str  # host:port, "" when the worker exports none
    host: str
    tags: str
    resources: dict[str, int]


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def worker_views(snap: ExportSnapshot, stale_seconds: float) -> list[WorkerView]:
    """Workers listed in Redis, with a state: busy (holds leases), idle, draining (finishing
    its tasks before exiting), or unresponsive when its heartbeat is older than
    ``stale_seconds`` (it is not given up for dead yet)."""
    views = []
    for name, (beat_ms, leases, record) in sorted(snap.workers.items()):
        try:
            status = json.loads(record.get(b"status") or b"{}")
            resources = json.loads(record.get(b"resources") or b"{}")
        except ValueError:
            status, resources = {}, {}
        age = max(snap.now_us / 1e6 - beat_ms / 1e3, 0.0)
        if age > stale_seconds:
            state = "unresponsive"
        elif status.get("draining"):
            state = "draining"
        else:
            state = "busy" if leases else "idle"
        views.append(
            WorkerView(
                name,
                state,
                age,
                _text(record.get(b"metrics")),
                _text(record.get(b"host")),
                _text(record.get(b"tags")),
                {k: int(v) for k, v in resources.items()},
            )
        )
    return views


class QueueExporter(Collector):
    """Collector of every queue's metrics, and the http_sd target list."""

    def __init__(
        self,
        client: redis.Redis,
        queues: list[str] | None = None,
        discover_seconds: float = DISCOVER_SECONDS,
        stale_seconds: float = STALE_SECONDS,
        result_sample: int = RESULT_SAMPLE,
    ) -> None:
        self.client = client
        self.fixed_queues = list(queues or [])
        self.discover_seconds = discover_seconds
        self.stale_seconds = stale_seconds
        self.result_sample = result_sample
        self._stores: dict[str, QueueStore] = {}
        self._found: tuple[float, list[str]] = (float("-inf"), [])
        self._unreadable: set[str] = set()  # queues this user may not read, logged once each
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.server: MetricsServer | None = None

    # -- reading Redis -----------------------------------------------------------------
    def queues(self) -> list[str]:
        if self.fixed_queues:
            return self.fixed_queues
        with self._lock:
            when, names = self._found
            if time.monotonic() - when >= self.discover_seconds:
                names = find_queues(self.client)
                self._found = (time.monotonic(), names)
            return names

    def snapshots(self) -> dict[str, ExportSnapshot]:
        """Every queue's snapshot; a queue this Redis user may not read is left out (and
        logged once), so that one such queue does not hide the others."""
        out = {}
        for queue in self.queues():
            # the count is read at every scrape (one GET): a queue seen before its manager
            # kept it in partitions is then read in all of them
            shards = stored_shards(self.client, queue) or 1
            store = self._stores.get(queue)
            if store is None or store.shards != shards:
                store = self._stores[queue] = open_store(self.client, queue, shards)
            try:
                out[queue] = store.export_snapshot(sample=self.result_sample)
            except redis.exceptions.NoPermissionError as exc:
                if queue not in self._unreadable:
                    self._unreadable.add(queue)
                    log.warning("queue %r skipped: this Redis user may not read it (%s)", queue, exc)
                continue
            self._unreadable.discard(queue)
        return out

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus http_sd: one target group per live worker that serves metrics."""
        groups = []
        for queue, snap in self.snapshots().items():
            for w in worker_views(snap, self.stale_seconds):
                if w.metrics and w.state != "unresponsive":
                    groups.append(
                        {
                            "targets": [w.metrics],
                            "labels": {
                                "queue": queue,
                                "__meta_wq_worker": w.name,
                                "__meta_wq_host": w.host,
                                "__meta_wq_tags": w.tags,
                            },
                        }
                    )
        return groups

    def dump(self) -> dict[str, Any]:
        """Everything the metrics say, as plain data (``wq-redis exporter --json``)."""
        queues = {}
        for queue, snap in self.snapshots().items():
            queues[queue] = {
                "waiting": {m: n for m, (n, _) in snap.waiting.items()},
                "oldest_waiting_age_seconds": {m: _age(snap, sub) for m, (_, sub) in snap.waiting.items() if sub >= 0},
                "running": snap.running,
                "counters": snap.counters,
                "with_results": snap.finished,
                "result_bytes": _result_bytes(snap),
                "workers": [vars(w) for w in worker_views(snap, self.stale_seconds)],
                "broken_keys": dict(snap.broken),
            }
        return {"queues": queues, "targets": self.targets()}

    # -- Prometheus ----------------------------------------------------------------------
    def describe(self) -> Iterable[Metric]:
        return []  # collect() reads Redis: never at registration

    def collect(self) -> Iterable[Metric]:
        started = time.monotonic()
        up = GaugeMetricFamily("wq_redis_up", "1 when the exporter's last read of Redis succeeded.")
        try:
            snapshots = self.snapshots()
            memory = self._memory()
        except (redis.RedisError, OSError) as exc:
            log.warning("cannot read Redis: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        if memory is not None:
            yield GaugeMetricFamily("wq_redis_memory_used_bytes", "Memory Redis uses (INFO memory).", value=memory)
        yield GaugeMetricFamily("wq_exporter_queues", "Queues found on this Redis.", value=len(snapshots))
        yield from queue_metrics(snapshots, self.stale_seconds)
        yield GaugeMetricFamily(
            "wq_exporter_scrape_duration_seconds",
            "Time this scrape spent reading Redis.",
            value=time.monotonic() - started,
        )

    def _memory(self) -> int | None:
        """Redis' used memory (a cluster's: its primaries' together), or None for a user
        without INFO (a read-only ACL user)."""
        try:
            if is_cluster(self.client):
                return used_memory(self.client)
            return int(self.client.info("memory").get("used_memory", 0))
        except redis.exceptions.NoPermissionError:
            return None

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- HTTP ----------------------------------------------------------------------------
    def serve(self, bind: str, ports: range, advertise: str | None = None) -> MetricsServer:
        """``/metrics``, ``/sd`` (alias ``/http_sd``) and ``/healthz`` on the first free port."""
        sd = json_route(self.targets)
        self.server = serve(
            self.registry,
            bind,
            ports,
            {"/sd": sd, "/http_sd": sd, "/healthz": self._health},
            advertise,
            name="exporter",
        )
        return self.server

    def _health(self) -> tuple[int, str, bytes]:
        try:
            self.client.ping()
        except (redis.RedisError, OSError) as exc:
            return 503, "application/json", json.dumps({"status": "unhealthy", "reason": str(exc)}).encode()
        return 200, "application/json", b'{"status": "ok"}'

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def _age(snap: ExportSnapshot, submitted_us: int) -> float:
    return max(snap.now_us - submitted_us, 0) / 1e6  # submit times come from the manager's clock


def _result_bytes(snap: ExportSnapshot) -> float:
    if snap.sampled == 0:
        return 0
    return snap.result_bytes * max(snap.finished, snap.sampled) / snap.sampled


def queue_metrics(snapshots: dict[str, ExportSnapshot], stale_seconds: float) -> Iterable[Metric]:
    """The metric families of every queue (each family once, with a ``queue`` label)."""
    per_class = ["queue", "resource_class", "tag"]
    waiting = GaugeMetricFamily(
        "wq_tasks_waiting", "Tasks waiting for a worker, by resource class and tag.", labels=per_class
    )
    oldest = GaugeMetricFamily(
        "wq_oldest_waiting_task_age_seconds",
        "Age of the longest-waiting task of each resource class and tag (since submission).",
        labels=per_class,
    )
    running = GaugeMetricFamily(
        "wq_tasks_running", "Task attempts holding a lease, by resource class and tag.", labels=per_class
    )
    finished = GaugeMetricFamily(
        "wq_tasks_with_results", "Finished tasks waiting for the manager to retrieve them.", labels=["queue"]
    )
    result_bytes = GaugeMetricFamily(
        "wq_result_bytes",
        "Bytes of results (output, return values, output files) "
        "held in Redis for the manager; estimated from a sample when many wait.",
        labels=["queue"],
    )
    workers = GaugeMetricFamily("wq_workers", "Workers listed in Redis, by state.", labels=["queue", "state"])
    cores = {
        "workers": GaugeMetricFamily("wq_workers_cores", "Cores offered by responsive workers.", labels=["queue"]),
        "running": GaugeMetricFamily("wq_tasks_running_cores", "Cores held by running tasks.", labels=["queue"]),
        "waiting": GaugeMetricFamily("wq_tasks_waiting_cores", "Cores the waiting tasks ask for.", labels=["queue"]),
    }
    gpus = {
        "workers": GaugeMetricFamily("wq_workers_gpus", "GPUs offered by responsive workers.", labels=["queue"]),
        "running": GaugeMetricFamily("wq_tasks_running_gpus", "GPUs held by running tasks.", labels=["queue"]),
        "waiting": GaugeMetricFamily("wq_tasks_waiting_gpus", "GPUs the waiting tasks ask for.", labels=["queue"]),
    }
    counters = {key: CounterMetricFamily(name, text, labels=["queue"]) for key, (name, text) in COUNTERS.items()}
    broken = GaugeMetricFamily(
        "wq_queue_unreadable_keys",
        "Keys of the queue this scrape could not read (a wrong "
        "type written by another client, or not readable by the exporter's Redis user): "
        "1 each, by key (a task's id shown as *).",
        labels=["queue", "key"],
    )
    for queue, snap in snapshots.items():
        held = {"workers": [0, 0], "running": [0, 0], "waiting": [0, 0]}
        for member, (count, submitted) in snap.waiting.items():
            cls, tag = split_member(member)
            waiting.add_metric([queue, cls, tag], count)
            if submitted >= 0 and count:
                oldest.add_metric([queue, cls, tag], _age(snap, submitted))
            _add_held(held["waiting"], cls, count)
        for member, count in snap.running.items():
            cls, tag = split_member(member)
            running.add_metric([queue, cls, tag], count)
            _add_held(held["running"], cls, count)
        finished.add_metric([queue], snap.finished)
        result_bytes.add_metric([queue], _result_bytes(snap))
        states = dict.fromkeys(WORKER_STATES, 0)
        for w in worker_views(snap, stale_seconds):
            states[w.state] += 1
            if w.state != "unresponsive":
                held["workers"][0] += w.resources.get("cores", 0)
                held["workers"][1] += w.resources.get("gpus", 0)
        for state, n in states.items():
            workers.add_metric([queue, state], n)
        for key, (c, g) in held.items():
            cores[key].add_metric([queue], c)
            gpus[key].add_metric([queue], g)
        for key, family in counters.items():
            family.add_metric([queue], snap.counters.get(key, 0))
        for key in sorted({TASK_ID.sub(r"\1*", key) for key, _ in snap.broken}):
            broken.add_metric([queue, key], 1)
    yield from (
        waiting,
        oldest,
        running,
        finished,
        result_bytes,
        workers,
        *cores.values(),
        *gpus.values(),
        *counters.values(),
        broken,
    )


def _add_held(total: list[int], cls: str, count: int) -> None:
    try:
        request = parse_class(cls)
    except ValueError:
        return
    total[0] += request.cores * count
    total[1] += request.gpus * count
