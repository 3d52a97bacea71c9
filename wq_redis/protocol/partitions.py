"""A queue that spans shards: its tasks kept in N partitions, each with a hash tag of its own.

A queue's keys all carry the hash tag ``{NAME}`` (keys.py), so on Redis Cluster the whole
queue lives in one slot, on one primary: its depth and rate are one primary's.  A queue
made with ``WorkQueue(name, shards=N)`` keeps its tasks in N partitions instead:

- partition 0 is the queue's own keys, ``wq:{NAME}:`` (where an unsharded queue keeps
  everything), partition i (1 <= i < N) ``wq:{NAME|i}:`` (``|`` is refused in queue
  names, so no queue's keys are another's partition; ACL patterns: acl.py).  Each
  partition is a whole queue of the key schema, run by the same scripts; on a cluster
  each hash tag hashes to its own slot, so the partitions spread over the primaries;
- what belongs to the queue as a whole stays in partition 0: the shard count (``shards``,
  written by the manager at attach: workers read it at start), the id counter (one
  counter, reserved in blocks, so ids are unique across partitions), function bodies and
  cached inputs (stored once, read by workers from there), categories, workers' records
  and heartbeats, their wake and control keys, blocked hosts, the reaper's lock;
- a task lives in partition ``id % N`` (``partition_of``): consecutive ids go round the
  partitions, so submits spread evenly, and every call about a task (cancel, its state,
  a completion, a lease renewal) finds its partition from its id alone.

The manager's fan-out is client/shards.py, the worker's worker/partitions.py; status and
the exporter sum the partitions (``merge_snapshots``, ``merge_exports``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from .answers import ExportSnapshot, Snapshot
from .cluster import queue_client
from .keys import QueueKeys

MAX_SHARDS = 1024  # more partitions than any cluster has primaries to spread them over, many times


def check_shards(shards: Any, source: str = "shards") -> int:
    """``shards`` as a partition count (1: unsharded); a clear ValueError otherwise."""
    if isinstance(shards, str) and shards.strip().isdigit():
        shards = int(shards)
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"{source} must be a whole number of partitions from 1 to {MAX_SHARDS}, not {shards!r}")
    return shards


def partition_of(task_id: int | str, shards: int) -> int:
    """The partition that holds task ``task_id`` of a queue of ``shards`` partitions."""
    return int(task_id) % shards


def prefixes(name: str, shards: int) -> list[str]:
    """The key prefixes of a queue's partitions, partition 0 first."""
    return [QueueKeys(name, part).prefix for part in range(shards)]


def split(items: Sequence[Any], shards: int, task_id: Any = lambda item: item[0]) -> dict[int, list[Any]]:
    """``items`` by the partition of their task id (``task_id(item)``), each in its order."""
    out: dict[int, list[Any]] = {}
    for item in items:
        out.setdefault(partition_of(task_id(item), shards), []).append(item)
    return out


def stored_shards(client: Any, name: str) -> int | None:
    """The shard count the queue's manager stored (None: never sharded).  A value that is no
    count (another client's) reads as None."""
    keys = QueueKeys(name)
    try:
        value = queue_client(client, keys.prefix).get(keys.shards)
    except redis.ResponseError:
        return None
    return parse_stored_shards(value)


def parse_stored_shards(value: Any) -> int | None:
    """The value at a queue's shard-count key as a count; None for none, or for anything
    that is no count (another client's, or a wrong type's error)."""
    if not isinstance(value, (bytes, str)):
        return None
    try:
        return check_shards(value.decode() if isinstance(value, bytes) else value)
    except (ValueError, UnicodeDecodeError):
        return None


def resolve_shards(client: Any, name: str, asked: int | None) -> int:
    """The partitions a manager uses: ``asked`` (None: what is stored, else 1).  Asking for
    another count than the stored one raises: the tasks in Redis are where the stored count
    put them."""
    stored = stored_shards(client, name)
    if asked is None:
        return stored or 1
    asked = check_shards(asked)
    if stored is not None and stored != asked:
        raise ValueError(
            f"queue {name!r} keeps its tasks in {stored} partitions (key {QueueKeys(name).shards}); "
            f"shards={asked} differs: pass shards={stored}, or use another queue name"
        )
    return asked


def merge_snapshots(parts: Sequence[Snapshot]) -> Snapshot:
    """One queue's snapshot from its partitions': counts summed, workers as partition 0
    lists them (they heartbeat there only), running tasks of every partition."""
    first = parts[0]
    merged = Snapshot(
        waiting=dict(first.waiting),
        running=first.running,
        with_results=first.with_results,
        counters=dict(first.counters),
        workers=dict(first.workers),
        running_tasks=list(first.running_tasks),
        running_given=list(first.running_given),
        running_by_worker=dict(first.running_by_worker),
        broken=list(first.broken),
    )
    for part in parts[1:]:
        _add(merged.waiting, part.waiting)
        merged.running += part.running
        merged.with_results += part.with_results
        _add(merged.counters, part.counters)
        for name, fields in part.workers.items():
            merged.workers.setdefault(name, fields)
        merged.running_tasks += part.running_tasks
        merged.running_given += part.running_given
        _add(merged.running_by_worker, part.running_by_worker)
        merged.broken += part.broken
    return merged


def merge_exports(parts: Sequence[ExportSnapshot]) -> ExportSnapshot:
    """The exporter's snapshot of one queue from its partitions': sums; a queue's oldest
    waiting task is the oldest of any partition's."""
    first = parts[0]
    waiting = dict(first.waiting)
    running = dict(first.running)
    counters = dict(first.counters)
    workers = dict(first.workers)
    finished, result_bytes, sampled, broken = first.finished, first.result_bytes, first.sampled, list(first.broken)
    for part in parts[1:]:
        for member, (count, oldest) in part.waiting.items():
            had, had_oldest = waiting.get(member, (0, -1))
            known = [t for t in (had_oldest, oldest) if t >= 0]
            waiting[member] = (had + count, min(known) if known else -1)
        _add(running, part.running)
        _add(counters, part.counters)
        for name, seen in part.workers.items():
            workers.setdefault(name, seen)
        finished += part.finished
        result_bytes += part.result_bytes
        sampled += part.sampled
        broken += part.broken
    return ExportSnapshot(
        now_us=max(p.now_us for p in parts),
        waiting=waiting,
        running=running,
        counters=counters,
        workers=workers,
        finished=finished,
        result_bytes=result_bytes,
        sampled=sampled,
        broken=broken,
    )


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for name, value in more.items():
        into[name] = into.get(name, 0) + value
