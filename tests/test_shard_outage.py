"""A sharded queue whose partition 1 does not answer (its primary died, on a cluster):
the worker's and the manager's stores skip it and go on with the others, hold what was
for it, and deliver and read it once it answers again (protocol/partition_outage.py).

On one Redis, partition 1's client is pointed at a closed port: what a dead primary
looks like to the stores (a refused connection)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import wq_redis as wq
from wq_redis.embedded.server import free_port
from wq_redis.protocol import partition_outage
from wq_redis.protocol.answers import Delivery
from wq_redis.protocol.partitions import partition_of
from wq_redis.worker.partitions import PartitionedStore

FREE = {"cores": 8, "memory": 1024, "disk": 1024, "gpus": 0}
SHARDS = 3


def dead_client() -> redis.Redis:
    return redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 1))


def claim_all(store: PartitionedStore, results: list[Any] = ()) -> tuple[list[Any], list[Delivery]]:  # type: ignore[assignment]
    """Claims until one finds nothing (results sent with the first)."""
    claimed, answers = [], []
    while True:
        found, _, delivered = store.claim("w@test", FREE, [], 8, 30_000, "s", results=results)
        answers += delivered
        results = []
        if not found:
            return claimed, answers
        claimed += found


def test_a_partition_away_is_skipped_and_its_results_held_until_it_answers(
    redis_url: str, queue_name: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # asked again at every call (a test need not wait out the back-off)
    monkeypatch.setattr(partition_outage, "BACKOFF_SECONDS", 0.0)
    client = redis.Redis.from_url(redis_url)
    with wq.WorkQueue(queue_name, redis_url=redis_url, shards=SHARDS) as q:
        ids = q.submit_many([wq.Task("true") for _ in range(3 * SHARDS)])
        q._buffer.flush()
        worker = PartitionedStore(client, queue_name, SHARDS)
        # one task of each partition claimed while all answer
        first, _, _ = worker.claim("w@test", FREE, [], 1, 30_000, "s")
        held = {c.task_id: c.token for c in first}
        while {partition_of(i, SHARDS) for i in held} != {0, 1, 2}:
            found, _, _ = worker.claim("w@test", FREE, [], 1, 30_000, "s")
            held.update({c.task_id: c.token for c in found})
        live = worker.parts[1].client
        worker.parts[1].client = dead_client()
        caplog.set_level(logging.WARNING, logger="wq_redis.worker")

        # results sent with claims: partition 1's held (RETRY), the others recorded;
        # the other partitions' tasks go on being claimed
        results = [(task_id, token, {"r": 0, "rs": 0}) for task_id, token in held.items()]
        claimed, answers = claim_all(worker, results)
        by_id = dict(zip(held, answers))
        assert {i: a for i, a in by_id.items() if partition_of(i, SHARDS) == 1} == {
            i: Delivery.RETRY for i in held if partition_of(i, SHARDS) == 1
        }
        assert all(a is Delivery.RECORDED for i, a in by_id.items() if partition_of(i, SHARDS) != 1)
        left = [i for i in ids if i not in held]
        assert sorted(c.task_id for c in claimed) == sorted(i for i in left if partition_of(i, SHARDS) != 1)
        # leases of the other partitions renewed, the reaper passes partition 1 by
        (mine,) = [i for i in held if partition_of(i, SHARDS) == 1]
        renewal = worker.renew("w@test", "{}", {c.task_id: c.token for c in claimed} | {mine: held[mine]}, 30_000)
        assert renewal.lost == []
        assert worker.reap(lock_ms=0, worker_timeout_ms=60_000, force=True) is not None  # (raised before)
        # the manager skips partition 1 too: the other partitions' tasks come back
        back = [q.wait(5) for _ in range(2)]
        assert sorted(t.id for t in back if t is not None) == sorted(i for i in held if partition_of(i, SHARDS) != 1)
        q._store.parts[1].client = dead_client()
        worker.complete([(c.task_id, c.token, {"r": 0, "rs": 0}) for c in claimed])
        back = [q.wait(5) for _ in claimed]
        assert sorted(t.id for t in back if t is not None) == sorted(c.task_id for c in claimed)
        assert q.wait(0.2) is None  # partition 1 not asked: no error, and not drained

        # partition 1 answers again: its held result goes in, its tasks are claimed
        worker.parts[1].client = live
        q._store.parts[1].client = live
        assert worker.complete([(mine, held[mine], {"r": 0, "rs": 0})]) == [Delivery.RECORDED]
        rest, _ = claim_all(worker)
        assert sorted(c.task_id for c in rest) == sorted(i for i in left if partition_of(i, SHARDS) == 1)
        worker.complete([(c.task_id, c.token, {"r": 0, "rs": 0}) for c in rest])
        back = [q.wait(5) for _ in range(1 + len(rest))]
        assert sorted(t.id for t in back if t is not None) == sorted([mine, *(c.task_id for c in rest)])
        assert q.wait(0.2) is None and q.empty()
        stats = q.stats
        assert (stats.tasks_submitted, stats.tasks_done) == (3 * SHARDS, 3 * SHARDS)
    lines = [r.getMessage() for r in caplog.records if r.name == "wq_redis.worker" and "partition 1" in r.getMessage()]
    assert [("does not answer" in line, "answers again" in line) for line in lines] == [(True, False), (False, True)]
