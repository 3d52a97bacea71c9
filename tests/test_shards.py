"""A queue that spans shards (WorkQueue(name, shards=N)) on a single Redis: partition
naming and routing, real workers taking from every partition, priorities within a
partition, cancel in partition 2, stats summed (protocol/partitions.py, client/shards.py,
worker/partitions.py).  tests/test_cluster.py runs one on a real cluster."""

from __future__ import annotations

import collections

import pytest
import redis
from conftest import drain, wait_until
from helpers_tasks import my_sum

import wq_redis as wq
from wq_redis.ops.exporter import QueueExporter
from wq_redis.protocol.acl import key_patterns
from wq_redis.protocol.fields import RETRIEVED_COUNT, SUBMITTED_COUNT
from wq_redis.protocol.keys import QueueKeys, check_queue_name
from wq_redis.protocol.partitions import (
    check_shards,
    merge_snapshots,
    partition_of,
    prefixes,
    resolve_shards,
    split,
    stored_shards,
)
from wq_redis.protocol.store import QueueStore, Snapshot, find_queues
from wq_redis.worker.partitions import PartitionedStore, worker_store


# -- naming and routing (no Redis) --------------------------------------------------------
def test_partition_prefixes_keep_the_base_keys_as_partition_zero():
    assert prefixes("jobs", 3) == ["wq:{jobs}:", "wq:{jobs|1}:", "wq:{jobs|2}:"]
    assert QueueKeys("jobs").prefix == QueueKeys("jobs", 0).prefix  # unsharded: the keys as always
    assert QueueKeys("jobs", 2).task(7) == "wq:{jobs|2}:t:7"
    assert QueueKeys("jobs").shards == "wq:{jobs}:shards"
    with pytest.raises(ValueError):
        QueueKeys("jobs", -1)
    with pytest.raises(ValueError, match="must not contain"):
        check_queue_name("jobs|1")  # a partition's name is never a queue's


def test_acl_patterns_cover_every_partition_and_no_other_queue():
    import fnmatch

    patterns = key_patterns("jobs")
    for prefix in prefixes("jobs", 5):
        assert any(fnmatch.fnmatchcase(prefix + "t:1", p) for p in patterns), prefix
    assert not any(fnmatch.fnmatchcase("wq:{jobsx|1}:t:1", p) for p in patterns)
    assert not any(fnmatch.fnmatchcase("wq:{jobsx}:t:1", p) for p in patterns)


def test_routing_by_id_goes_round_the_partitions():
    assert [partition_of(i, 3) for i in range(1, 8)] == [1, 2, 0, 1, 2, 0, 1]
    assert split([(4, "a"), (5, "b"), (7, "c"), (6, "d")], 3) == {1: [(4, "a"), (7, "c")], 2: [(5, "b")], 0: [(6, "d")]}
    assert split([3, 4], 2, int) == {1: [3], 0: [4]}


@pytest.mark.parametrize("bad", [0, -2, 1025, 2.5, "x", True, None])
def test_shard_counts_are_checked(bad):
    with pytest.raises(ValueError, match="partitions"):
        check_shards(bad)
    assert check_shards("3") == 3 and check_shards(1) == 1


def test_snapshots_are_summed_with_workers_from_partition_zero():
    a = Snapshot(
        {"c|": 2}, 1, 0, {"submitted": 5}, {"w1": {b"host": b"h"}}, [("w1", "c|")], running_by_worker={"w1": 1}
    )
    b = Snapshot({"c|": 3, "d|x": 1}, 2, 4, {"submitted": 7, "requeued": 1}, {}, [("w1", "c|"), ("w2", "c|")])
    b.running_by_worker = {"w1": 1, "w2": 1}
    merged = merge_snapshots([a, b])
    assert merged.waiting == {"c|": 5, "d|x": 1}
    assert (merged.running, merged.with_results) == (3, 4)
    assert merged.counters == {"submitted": 12, "requeued": 1}
    assert merged.workers == {"w1": {b"host": b"h"}}
    assert merged.running_by_worker == {"w1": 2, "w2": 1} and len(merged.running_tasks) == 3
    assert a.waiting == {"c|": 2}  # the parts are left as they were


# -- on a single Redis ----------------------------------------------------------------------
def _count(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


@pytest.mark.parametrize("garbage", ["hash", "not a count", "0"])
def test_another_clients_value_at_the_shard_count_reads_as_never_sharded(redis_url, queue_name, garbage):
    client = redis.Redis.from_url(redis_url)
    key = QueueKeys(queue_name).shards
    if garbage == "hash":
        client.hset(key, "a", "b")
    else:
        client.set(key, garbage)
    assert stored_shards(client, queue_name) is None
    assert not worker_store(client, queue_name).sharded  # a worker that starts now goes on unsharded
    with wq.WorkQueue(queue_name, redis_url=redis_url) as q:  # the manager goes on, unsharded
        assert q.shards == 1


def test_shard_count_is_stored_and_a_different_count_is_refused(redis_url, queue_name):
    client = redis.Redis.from_url(redis_url)
    assert stored_shards(client, queue_name) is None
    with wq.WorkQueue(queue_name, redis_url=redis_url, shards=3) as q:
        assert q.shards == 3
        q.submit_many([wq.Task("true") for _ in range(3)])  # one in each partition
        assert stored_shards(client, queue_name) == 3
        assert worker_store(client, queue_name).sharded  # a worker finds the count by itself
        assert not worker_store(client, queue_name, shards=1).sharded  # --shards 1 overrides
        assert isinstance(worker_store(client, queue_name), PartitionedStore)
    with pytest.raises(ValueError, match="keeps its tasks in 3 partitions"):
        wq.WorkQueue(queue_name, redis_url=redis_url, shards=2)
    with wq.WorkQueue(queue_name, redis_url=redis_url) as again:  # no count asked: the stored one
        assert again.shards == 3
    assert resolve_shards(client, "never-sharded-" + queue_name, None) == 1
    assert find_queues(client) == [queue_name]  # the partitions are no queues of their own


def test_unsharded_queue_keeps_its_keys_as_before(queue, redis_url, queue_name):
    client = redis.Redis.from_url(redis_url)
    queue.submit(wq.Task("true"))
    queue.stats  # noqa: B018  # sends the buffered task
    assert queue.shards == 1
    assert client.exists(QueueKeys(queue_name).shards) == 0
    assert _count(client, f"wq:{{{queue_name}|*") == 0


def test_sharded_queue_runs_every_task_once_with_real_workers(redis_url, queue_name, workers):
    client = redis.Redis.from_url(redis_url)
    with wq.WorkQueue(queue_name, redis_url=redis_url, shards=3) as q:
        ids = q.submit_many([wq.PythonTask(my_sum, i, 1000) for i in range(60)])
        ids += [q.submit(wq.PythonTask(my_sum, i, 2000)) for i in range(30)]
        expected = {
            task_id: (i + 1000 if n < 60 else i + 2000)
            for n, (i, task_id) in enumerate(zip([*range(60), *range(30)], ids))
        }
        per_partition = collections.Counter(partition_of(i, 3) for i in ids)
        assert per_partition == {0: 30, 1: 30, 2: 30}  # spread evenly
        assert q.stats.tasks_waiting == 90  # (sends what submit buffered)
        # the tasks wait in their partitions' keys
        assert [_count(client, prefix + "t:*") for prefix in prefixes(queue_name, 3)] == [30, 30, 30]
        workers.start("--cores", "2")
        workers.start("--cores", "1")
        done = drain(q, 90, timeout=60)
        assert sorted(t.id for t in done) == sorted(ids)  # every task back once
        assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS and t.output == expected[t.id] for t in done)
        assert q.wait(0.2) is None and q.empty()
        stats = q.stats
        assert (stats.tasks_submitted, stats.tasks_done, stats.tasks_waiting) == (90, 90, 0)
        assert wait_until(lambda: q.stats.workers_connected == 2)  # counted once, not once per partition
        # each partition's tasks came back from it
        for part in range(3):
            counters = QueueStore(client, queue_name, part=part).snapshot(60_000).counters
            assert (counters.get(SUBMITTED_COUNT), counters.get(RETRIEVED_COUNT)) == (30, 30), part


def test_priorities_hold_within_a_partition(redis_url, queue_name, workers):
    with wq.WorkQueue(queue_name, redis_url=redis_url, shards=3) as q:
        tasks = []
        for i in range(12):
            t = wq.PythonTask(my_sum, i, 0)
            t.specify_priority(i)
            tasks.append(t)
        q.submit_many(tasks)
        q.stats  # noqa: B018  # all queued before the worker starts
        workers.start("--cores", "1")
        done = drain(q, 12, timeout=60)
        by_partition: dict[int, list[float]] = {}
        assert all(t.execute_cmd_start for t in done)
        for t in sorted(done, key=lambda t: t.execute_cmd_start or 0):
            by_partition.setdefault(partition_of(t.id, 3), []).append(t.priority)
        assert sorted(len(order) for order in by_partition.values()) == [4, 4, 4]
        for part, order in by_partition.items():
            assert order == sorted(order, reverse=True), (part, order)  # highest first, in each partition


def _one_core(command: str) -> wq.Task:
    task = wq.Task(command)
    task.specify_cores(1)  # (a task that declares nothing takes the whole worker)
    return task


def test_cancel_in_partition_two_and_stats_summed(redis_url, queue_name, workers, tmp_path):
    with wq.WorkQueue(queue_name, redis_url=redis_url, shards=3) as q:
        marker = tmp_path / "finished"
        running = q.submit_many([_one_core(f"sleep 30; touch {marker}") for _ in range(3)])
        workers.start("--cores", "3")
        assert wait_until(lambda: all(q.task_state(i) == wq.WORK_QUEUE_TASK_RUNNING for i in running), 20)
        waiting = q.submit_many([_one_core("true") for _ in range(3)])  # no core free: they wait
        victim = next(i for i in running if partition_of(i, 3) == 2)
        idle = next(i for i in waiting if partition_of(i, 3) == 2)
        stats = q.stats
        assert (stats.tasks_running, stats.tasks_waiting, stats.tasks_submitted) == (3, 3, 6)
        assert stats.workers_connected == 1 and stats.total_cores == 3
        cancelled = q.cancel_by_taskid(victim)
        assert cancelled is not None and cancelled.id == victim
        assert q.cancel_by_taskid(idle).id == idle
        assert q.task_state(victim) == wq.WORK_QUEUE_TASK_CANCELED
        assert q.cancel_by_taskid(victim) is None  # only once
        # the worker stops the cancelled task at once (its control key in partition 0 rang),
        # and its core runs the two tasks still waiting
        done = drain(q, 2, timeout=10)
        assert sorted(t.id for t in done) == sorted(set(waiting) - {idle})
        stats = q.stats
        assert (stats.tasks_cancelled, stats.tasks_running, stats.tasks_waiting, stats.tasks_done) == (2, 2, 0, 2)
        assert [q.cancel_by_taskid(i) is not None for i in running if i != victim] == [True, True]  # the rest
        assert q.wait(0.1) is None and q.empty()
        assert not marker.exists()


def test_workers_started_before_a_sharded_manager_serve_every_partition(redis_url, queue_name, workers):
    """Workers waiting for a queue its manager then keeps in partitions (Work Queue users
    start workers first) read the count at a heartbeat, which the manager rings when it
    stores the count, and claim across the partitions without a restart; before, they
    claimed in partition 0 only and the others' tasks waited forever."""
    workers.start("--cores", "2", "--lease-seconds", "60")  # idle beats every 48 s: only the ring is quick
    workers.start("--cores", "1", "--lease-seconds", "60")
    client = redis.Redis.from_url(redis_url)
    keys = QueueKeys(queue_name)
    assert wait_until(lambda: client.zcard(keys.workers) == 2, timeout=30)
    exporter = QueueExporter(client, discover_seconds=0)
    assert exporter.snapshots()[queue_name].counters.get("submitted", 0) == 0  # seen unsharded
    with wq.WorkQueue(queue_name, redis_url=redis_url, shards=3) as q:
        ids = q.submit_many([wq.PythonTask(my_sum, i, 1) for i in range(30)])
        assert {partition_of(i, 3) for i in ids} == {0, 1, 2}
        done = drain(q, 30, timeout=20)
        assert sorted(t.id for t in done) == sorted(ids)
        assert sorted(t.output for t in done) == [i + 1 for i in range(30)]
    assert exporter.snapshots()[queue_name].counters["submitted"] == 30  # every partition's, summed
