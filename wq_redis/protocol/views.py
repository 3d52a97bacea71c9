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
from typing import Any, cast

import redis

from . import fields as f
from .codes import TaskState
from .keys import QueueKeys
from .partitions import merge_snapshots, split, stored_shards
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

    def __init__(self, client: redis.Redis, name: str, shards: int | None = None) -> None:
        """``shards``: the queue's partitions (None: as its manager stored it, partitions.py)."""
        self.client = client
        self.store = QueueStore(client, name)
        self.keys: QueueKeys = self.store.keys
        self.name = name
        self.shards = shards or stored_shards(client, name) or 1
        # partition 0 (self.store) first; a task's reads go to its partition (id % shards)
        self.parts = [self.store] + [QueueStore(client, name, part=i) for i in range(1, self.shards)]

    def snapshot(self) -> Snapshot:
        return merge_snapshots(self.partition_snapshots())

    def partition_snapshots(self) -> list[Snapshot]:
        """Each partition's snapshot, partition 0 first (one for an unsharded queue)."""
        return [part.snapshot(WORKER_TIMEOUT_MS) for part in self.parts]

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
            name.decode(): int(score)
            for name, score in cast(
                "list[tuple[bytes, float]]", self.client.zrange(self.keys.workers, 0, -1, withscores=True)
            )
        }

    def declared_categories(self) -> dict[str, dict[str, int]]:
        """Category -> the resources its tasks get when they declare none (as the managers set them)."""
        raw = cast("dict[bytes, bytes]", self.client.hgetall(self.keys.categories))
        return {name.decode(): json.loads(value) for name, value in raw.items()}

    # -- tasks ---------------------------------------------------------------------------
    def task_ids(self, limit: int = 1000, running: bool = True, finished: bool = True) -> list[int]:
        """Ids of waiting (up to ``limit`` per ready queue), running and finished tasks."""
        return sorted({i for part in self.parts for i in self._task_ids(part, limit, running, finished)})

    @staticmethod
    def _task_ids(part: QueueStore, limit: int, running: bool, finished: bool) -> set[int]:
        k, client = part.keys, part.client
        members = [m.decode() for m in cast("set[bytes]", client.smembers(k.registry))]
        pipe = client.pipeline(transaction=False)
        for member in members:
            pipe.zrange(k.ready(member), 0, limit - 1)
            pipe.lrange(k.fifo(member), 0, limit - 1)
        if running:
            pipe.zrange(k.leases, 0, limit - 1)
        if finished:
            pipe.lrange(k.done, 0, limit - 1)
            pipe.srandmember(k.retrieving, limit)
        return {int(i) for batch in pipe.execute() for i in (batch or [])}

    def task_fields(self, ids: Sequence[int], names: Sequence[str] = TASK_FIELDS) -> list[list[bytes | None]]:
        if not ids:
            return []
        if self.shards == 1:
            pipe = self.client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hmget(self.keys.task(task_id), list(names))
            return cast("list[list[bytes | None]]", pipe.execute())
        found: dict[int, list[bytes | None]] = {}
        for part, part_ids in split(ids, self.shards, int).items():
            store = self.parts[part]
            pipe = store.client.pipeline(transaction=False)
            for task_id in part_ids:
                pipe.hmget(store.keys.task(task_id), list(names))
            found.update(zip(part_ids, pipe.execute()))
        return [found[task_id] for task_id in ids]

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
