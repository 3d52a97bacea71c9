"""A queue's state as plain data: what ``wq-redis status --json`` prints and
``WorkQueue.status()`` returns.  It only reads (through views.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import redis

from . import fields as f
from .partitions import merge_snapshots
from .resources import RESOURCE_NAMES, split_member
from .store import find_queues
from .views import QueueView, count_by

log = logging.getLogger(__name__)


class QueueUnreadable(PermissionError):
    """A queue named by the caller that this Redis user may not read (ACL)."""


def queue_report(
    view: QueueView, now_us: int, workers: bool, tasks: bool, categories: bool, limit: int
) -> dict[str, Any]:
    """Everything ``status`` shows of one queue, as plain data (what ``--json`` prints)."""
    parts = view.partition_snapshots()  # one, or a sharded queue's partitions (partitions.py)
    snap = merge_snapshots(parts)
    c = snap.counters
    report: dict[str, Any] = {
        "name": view.name,
        "waiting": sum(snap.waiting.values()),
        "running": snap.running,
        "with_results": snap.with_results,
        "submitted": c.get(f.SUBMITTED_COUNT, 0),
        "done": c.get(f.RETRIEVED_COUNT, 0),
        "failed": c.get(f.FAILED_COUNT, 0),
        "cancelled": c.get(f.CANCELED_COUNT, 0),
        "requeued": c.get(f.REQUEUED_COUNT, 0),
        "workers": len(snap.workers),
        "files_uploaded": c.get(f.FILES_UPLOADED_COUNT, 0),
        "waiting_by_class": [
            {"class": cls, "tag": tag, "tasks": n}
            for (cls, tag), n in sorted((split_member(m), n) for m, n in snap.waiting.items() if n)
        ],
    }
    if len(parts) > 1:
        report["shards"] = len(parts)
        report["partitions"] = [
            {
                "partition": i,
                "keys": view.parts[i].keys.prefix,
                "waiting": sum(part.waiting.values()),
                "running": part.running,
                "with_results": part.with_results,
                "submitted": part.counters.get(f.SUBMITTED_COUNT, 0),
            }
            for i, part in enumerate(parts)
        ]
    if workers:
        report["worker_list"] = _workers(view, snap, now_us)
    rows = view.tasks(limit) if tasks or categories else []
    if tasks:
        report["tasks"] = [_task_dict(row, now_us) for row in rows]
    if categories:
        report["categories"] = _categories(view, rows)
    return report


def _workers(view: QueueView, snap: Any, now_us: int) -> list[dict[str, Any]]:
    beats = view.heartbeats()
    in_use: dict[str, dict[str, int]] = {}
    for (worker, _), held in zip(snap.running_tasks, snap.running_given):  # from the leases: exact now
        used = in_use.setdefault(worker, dict.fromkeys(RESOURCE_NAMES, 0))
        for name, value in held.as_dict().items():
            used[name] += value
    running = snap.running_by_worker  # a pack's members each count
    out = []
    for name, record in sorted(snap.workers.items()):
        status = json.loads(record.get(f.WORKER_STATUS_B, b"{}") or b"{}")
        beat = beats.get(name)
        out.append(
            {
                "name": name,
                "host": record.get(f.WORKER_HOST_B, b"").decode(),
                "tags": [t for t in record.get(f.WORKER_TAGS_B, b"").decode().split(",") if t],
                "resources": json.loads(record.get(f.WORKER_RESOURCES_B, b"{}") or b"{}"),
                "in_use": in_use.get(name, dict.fromkeys(RESOURCE_NAMES, 0)),
                "tasks_running": running.get(name, 0),
                "tasks_done": status.get("done", 0),
                "draining": bool(status.get("draining", False)),  # exiting (SIGTERM, WorkQueue.shutdown_workers)
                "blocked": bool(status.get("blocked", False)),  # its host blocked (WorkQueue.block_host)
                "last_heartbeat_s": None if beat is None else round(now_us / 1e6 - beat / 1e3, 3),
                "version": record.get(f.WORKER_VERSION_B, b"").decode(),
            }
        )
    return out


def _task_dict(row: Any, now_us: int) -> dict[str, Any]:
    return {
        "id": row.id,
        "state": row.state,
        "tag": row.tag,
        "category": row.category,
        "class": row.resource_class,
        "worker": row.worker,
        "attempts": row.attempts,
        "tasks": row.tasks,
        "age_s": None if row.submitted_us is None else round((now_us - row.submitted_us) / 1e6, 3),
        "running_s": None
        if row.started_us is None or row.state != "RUNNING"
        else round((now_us - row.started_us) / 1e6, 3),
    }


def _categories(view: QueueView, rows: list[Any]) -> list[dict[str, Any]]:
    declared = view.declared_categories()
    counts = count_by(rows, "category", "state")
    names = sorted(set(declared) | {category for category, _ in counts})
    return [
        {
            "name": name,
            "max_resources": declared.get(name, {}),
            "waiting": counts.get((name, "READY"), 0),
            "running": counts.get((name, "RUNNING"), 0),
            "with_results": counts.get((name, "WAITING_RETRIEVAL"), 0),
        }
        for name in names
    ]


def gather(
    client: redis.Redis,
    queues: Iterable[str] | None,
    workers: bool = False,
    tasks: bool = False,
    categories: bool = False,
    limit: int = 100,
) -> dict[str, Any]:
    """The status of the named queues (or of every queue found) as one JSON-able dict."""
    names = list(queues) if queues else find_queues(client)
    views = [QueueView(client, name) for name in names]
    now_us = views[0].now_us() if views else int(time.time() * 1e6)
    reports = []
    for view in views:
        try:
            reports.append(queue_report(view, now_us, workers, tasks, categories, limit))
        except redis.exceptions.NoPermissionError as exc:
            if queues:  # named by the caller: say why it cannot be shown
                raise QueueUnreadable(f"cannot read queue {view.name!r} with this Redis user: {exc}") from None
            log.warning("queue %r skipped: this Redis user may not read it (%s)", view.name, exc)
    return {"time": now_us / 1e6, "queues": reports}
