"""Read-only views of queues: what ``wq-redis status``, ``stats_category`` and
``cancel_by_category`` need to see.

The write side of the store (``store.py``) changes a queue only through atomic Lua
scripts.  These reads need no atomicity: they are plain pipelined reads (SCAN, ZRANGE,
LRANGE, HMGET), each O(1) or bounded by a limit, so looking at a busy queue never holds
Redis, or its workers, for long.  Task listings are capped (``limit`` ids per source).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from . import fields as f
from .codes import TaskState
from .keys import QueueKeys
from .resources import split_member
from .store import WORKER_TIMEOUT_MS, QueueStore, Snapshot

# what ``tasks`` reads of each task hash, in the order it unpacks them
TASK_FIELDS = (
    f.STATE,
    f.MEMBER,
    f.WORKER,
    f.SUBMITTED,
    f.STARTED,
    f.CATEGORY,
    f.ATTEMPTS,
    f.PACK_SIZE,
    f.PACK_CANCELLED,
)


@dataclass
class TaskRow:
    """One task as ``wq-redis status -T`` lists it."""

    id: int
    state: str
    resource_class: str
    tag: str
    category: str
    worker: str | None
    attempts: int
    submitted_us: int | None
    started_us: int | None
    tasks: int = 1  # a pack (packing.py) is one row for its live members


class QueueView:
    """Reads of one queue (no writes, no scripts but the stats snapshot)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.store = QueueStore(client, name)
        self.keys: QueueKeys = self.store.keys
        self.name = name

    def snapshot(self) -> Snapshot:
        return self.store.snapshot(WORKER_TIMEOUT_MS)

    def now_us(self) -> int:
        """Redis' clock (ages are measured against it); this host's for a user without TIME."""
        try:
            seconds, micros = self.client.time()
        except redis.exceptions.NoPermissionError:
            return time.time_ns() // 1000
        return int(seconds) * 1_000_000 + int(micros)

    def heartbeats(self) -> dict[str, int]:
        """Worker name -> last heartbeat (Redis ms)."""
        return {
            name.decode(): int(score) for name, score in self.client.zrange(self.keys.workers, 0, -1, withscores=True)
        }

    def declared_categories(self) -> dict[str, dict[str, int]]:
        """Category -> the resources its tasks get when they declare none (as the managers set them)."""
        raw = self.client.hgetall(self.keys.categories)
        return {name.decode(): json.loads(value) for name, value in raw.items()}

    # -- tasks ---------------------------------------------------------------------------
    def task_ids(self, limit: int = 1000, running: bool = True, finished: bool = True) -> list[int]:
        """Ids of waiting (up to ``limit`` per ready queue), running and finished tasks."""
        k = self.keys
        members = [m.decode() for m in self.client.smembers(k.registry)]
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.zrange(k.ready(member), 0, limit - 1)
            pipe.lrange(k.fifo(member), 0, limit - 1)
        if running:
            pipe.zrange(k.leases, 0, limit - 1)
        if finished:
            pipe.lrange(k.done, 0, limit - 1)
            pipe.srandmember(k.retrieving, limit)
        ids = {int(i) for batch in pipe.execute() for i in (batch or [])}
        return sorted(ids)

    def task_fields(self, ids: Sequence[int], names: Sequence[str] = TASK_FIELDS) -> list[list[bytes | None]]:
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(self.keys.task(task_id), list(names))
        return pipe.execute() if ids else []

    def tasks(self, limit: int = 1000) -> list[TaskRow]:
        ids = self.task_ids(limit)
        rows = []
        for task_id, values in zip(ids, self.task_fields(ids)):
            state, member, worker, sub, started, category, attempts, members, cancelled = (_text(v) for v in values)
            if state is None:
                continue  # retrieved or cancelled meanwhile
            cls, tag = split_member(member or "|")
            rows.append(
                TaskRow(
                    id=task_id,
                    state=TaskState(int(state)).name,
                    resource_class=cls,
                    tag=tag,
                    category=category or "default",
                    worker=worker if int(state) != TaskState.READY else None,
                    attempts=int(attempts or 0),
                    submitted_us=_int(sub),
                    started_us=_int(started),
                    tasks=int(members) - int(cancelled or 0) if members else 1,
                )
            )
        return rows[:limit]

    def ids_with_category(self, category: str, limit: int = 1_000_000) -> list[int]:
        """Ids of waiting and running tasks of ``category`` (a scan: O(tasks))."""
        ids = self.task_ids(limit, finished=False)
        out = []
        for task_id, (state, found) in zip(ids, self.task_fields(ids, (f.STATE, f.CATEGORY))):
            if state in (f.STATE_READY_B, f.STATE_RUNNING_B) and (_text(found) or "default") == category:
                out.append(task_id)
        return out


def _text(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _int(value: str | None) -> int | None:
    return int(value) if value else None


def count_by(rows: Iterable[TaskRow], *attributes: str) -> dict[tuple[Any, ...], int]:
    """How many tasks the rows that share each combination of ``attributes`` stand for."""
    counts: dict[tuple[Any, ...], int] = {}
    for row in rows:
        key = tuple(getattr(row, a) for a in attributes)
        counts[key] = counts.get(key, 0) + row.tasks
    return counts
