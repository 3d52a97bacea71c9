"""Redis Cluster: any node's URL (or ``redis+cluster://``) for the manager, the workers
and their lanes, and status; queues on different primaries through one URL; a run that
goes on through ``CLUSTER FAILOVER`` and through a primary SIGKILLed, with every task back
once.  On a real cluster on loopback: three primaries, three replicas."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis
from cluster_servers import RedisClusterSet, binaries
from conftest import Workers, wait_until
from failover_run import FailoverRun, run_through
from helpers_tasks import my_sum
from redis.cluster import RedisCluster

import wq_redis as wq
from wq_redis.ops.exporter import QueueExporter
from wq_redis.protocol import cluster
from wq_redis.protocol.connection import check_url, client_from, open_client, safe_url, settings_of
from wq_redis.protocol.keys import QueueKeys
from wq_redis.protocol.partitions import prefixes
from wq_redis.protocol.store import QueueStore, find_queues


def test_a_cluster_url_names_nodes_credentials_and_options() -> None:
    found = cluster.parse("redis+cluster://me:s%40cret@10.0.0.1:7000,[::1]:7001,node-3?socket_timeout=7")
    assert found["nodes"] == [("10.0.0.1", 7000), ("::1", 7001), ("node-3", 6379)]
    assert found["options"] == {"username": "me", "password": "s@cret", "socket_timeout": 7.0}
    assert cluster.parse("rediss+cluster://h:1")["options"]["ssl"] is True


@pytest.mark.parametrize(
    ("url", "says"),
    [("redis+cluster://", "names no node"), ("redis+cluster://h:x", "not a number"), ("redis+cluster://h:1/3", "0")],
)
def test_a_wrong_cluster_url_fails_in_one_line_that_says_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_url(url)


def test_messages_hide_the_password_of_a_cluster_url() -> None:
    assert "pw" not in safe_url("redis+cluster://u:pw@h:1,h:2")


def need_binaries() -> None:
    """Skip without redis-server and redis-cli; fail under CI, which must run these tests."""
    if binaries() is None:
        message = "redis-server and redis-cli are needed for a cluster: make redis"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterSet]:
    need_binaries()
    found = RedisClusterSet()
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture
def no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WQ_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)


def names_on_two_primaries(found: RedisClusterSet, base: str) -> tuple[str, str, int]:
    """Two queue names whose slots are on different primaries, and the port of the third
    primary (owning neither)."""
    first = f"{base}-a"
    owner = found.owner_port("{" + first + "}")
    for i in range(1000):
        second = f"{base}-{i}"
        other = found.owner_port("{" + second + "}")
        if other != owner:
            third = next(
                n.port
                for n in found.nodes
                if n.port not in (owner, other) and found.client(n.port).role()[0] == b"master"
            )
            return first, second, third
    raise AssertionError("no two names on different primaries")


def test_two_queues_on_two_primaries_through_a_third_nodes_url(redis_cluster, queue_name, no_url_env) -> None:
    first, second, third = names_on_two_primaries(redis_cluster, queue_name)
    url = f"redis://127.0.0.1:{third}"  # a node that owns neither queue's slot
    client = open_client(url)
    assert cluster.is_cluster(client)
    lane = client_from(settings_of(client), "lane")  # what a worker's fast lane opens
    assert cluster.is_cluster(lane)
    stores = [QueueStore(lane, name) for name in (first, second)]
    owners = {store.client.connection_pool.get_connection().port for store in stores}  # type: ignore[union-attr]
    assert owners == {redis_cluster.owner_port("{" + n + "}") for n in (first, second)}
    pool = Workers(url, first)
    try:
        queues = [wq.WorkQueue(name, redis_url=url) for name in (first, second)]
        pool.start("--cores", "2", queue=first)
        pool.start("--cores", "2", queue=second)
        for q in queues:
            for i in range(20):
                q.submit(wq.PythonTask(my_sum, i, 1))
        for q in queues:
            done = [q.wait(30) for _ in range(20)]
            assert sorted(t.output for t in done if t is not None) == [i + 1 for i in range(20)]
        assert {first, second} <= set(find_queues(client))  # SCAN on every primary
        status = subprocess.run(
            [sys.executable, "-m", "wq_redis", "status", "--redis-url", f"redis+cluster://127.0.0.1:{third}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert first in status.stdout and second in status.stdout
        exporter = QueueExporter(open_client(url))
        assert {first, second} <= set(exporter.snapshots())
        assert b"wq_redis_memory_used_bytes" in exporter.exposition()
        for q in queues:
            q.close()
    finally:
        pool.stop_all()


def sharded_name_on_every_primary(found: RedisClusterSet, base: str, shards: int) -> str:
    """A queue name whose ``shards`` partitions' hash tags land on every primary."""
    primaries = {n.port for n in found.nodes if found.client(n.port).role()[0] == b"master"}
    for i in range(1000):
        name = f"{base}-s{i}"
        tags = ["{" + prefix[4:].partition("}")[0] + "}" for prefix in prefixes(name, shards)]
        if {found.owner_port(tag) for tag in tags} == primaries:
            return name
    raise AssertionError("no name whose partitions cover every primary")


def test_a_sharded_queue_spans_every_primary(redis_cluster, queue_name, no_url_env) -> None:
    name = sharded_name_on_every_primary(redis_cluster, queue_name, 3)
    url = redis_cluster.url(0)
    pool = Workers(url, name)
    try:
        with wq.WorkQueue(name, redis_url=url, shards=3) as q:
            ids = q.submit_many([wq.PythonTask(my_sum, i, 1) for i in range(60)])
            assert q.stats.tasks_waiting == 60
            # each partition's tasks are on its own primary (asked of that node itself)
            owners = set()
            for prefix in prefixes(name, 3):
                slot = redis_cluster.client(redis_cluster.nodes[0].port).cluster("keyslot", prefix + "t:1")
                port = redis_cluster.owner_port(prefix + "t:1")
                owners.add(port)
                node = redis_cluster.client(port)
                assert sum(1 for _ in node.scan_iter(match=prefix + "t:*", count=1000)) == 20, (prefix, slot)
                node.close()
            assert len(owners) == 3
            pool.start("--cores", "2")  # finds the shard count in Redis
            pool.start("--cores", "1")
            done = [q.wait(30) for _ in range(60)]
            assert sorted(t.id for t in done if t is not None) == sorted(ids)  # every task back once
            assert sorted(t.output for t in done if t is not None) == [i + 1 for i in range(60)]
            assert q.wait(0.2) is None and q.empty()
            # (the two-core worker may run all 60 before the other has registered)
            assert wait_until(lambda: q.stats.workers_connected == 2, timeout=30)
            stats = q.stats
            assert (stats.tasks_submitted, stats.tasks_done, stats.workers_connected) == (60, 60, 2)
            assert find_queues(open_client(url)).count(name) == 1  # one queue, not three
            exporter = QueueExporter(open_client(url))
            assert exporter.snapshots()[name].counters["submitted"] == 60  # summed
    finally:
        pool.stop_all()


def _run_through(
    found: RedisClusterSet, name: str, tmp_path, fail_over, shards: int | None = None, part: int = 0
) -> FailoverRun:
    """The shared run (failover_run.py) through the URL of a node that neither owns the
    queue (its partition ``part``, if sharded) nor replicates its owner; ``fail_over`` is
    given the set and the owner's port."""
    tag = "{" + (prefixes(name, shards)[part][4:].partition("}")[0] if shards else name) + "}"
    owner = found.owner_port(tag)
    other = next(n.port for n in found.nodes if n.port != owner and found.replica_of(owner) != n.port)
    leases = [prefix + "leases" for prefix in prefixes(name, shards)] if shards else [QueueKeys(name).leases]
    counter = RedisCluster(host="127.0.0.1", port=other)
    return run_through(
        f"redis://127.0.0.1:{other}",
        name,
        tmp_path / "runs.log",
        lambda: fail_over(found, owner),
        lambda: found.wait_owner_moved(tag, owner),
        lambda: sum(counter.zcard(key) for key in leases),
        shards=shards,
    )


@pytest.fixture
def fresh_cluster(no_url_env) -> Iterator[RedisClusterSet]:
    """A cluster of the test's own: a failover changes who is primary, a kill a node less."""
    need_binaries()
    found = RedisClusterSet()
    try:
        yield found
    finally:
        found.stop()


@pytest.mark.faults
def test_cluster_failover_mid_run_every_task_back_once(fresh_cluster, queue_name, tmp_path) -> None:
    def fail_over(found: RedisClusterSet, owner: int) -> None:
        found.client(found.replica_of(owner)).execute_command("CLUSTER", "FAILOVER")

    _run_through(fresh_cluster, queue_name, tmp_path, fail_over).check("CLUSTER FAILOVER")


@pytest.mark.faults
def test_primary_sigkilled_under_a_sharded_queue_every_task_back_once(fresh_cluster, queue_name, tmp_path) -> None:
    """A queue of three partitions, one on each primary: the primary of partition 1 is
    killed, the others go on meanwhile (tasks come back before the replica is promoted),
    and that one's tasks resume on the replica promoted in its place."""

    def kill(found: RedisClusterSet, owner: int) -> None:
        found.kill(owner)

    name = sharded_name_on_every_primary(fresh_cluster, queue_name, 3)
    _run_through(fresh_cluster, name, tmp_path, kill, shards=3, part=1).check(
        "primary SIGKILL, a queue of 3 partitions", progress_during=True
    )


@pytest.mark.faults
def test_a_slot_migrated_mid_run_every_task_back_once(redis_cluster, queue_name, tmp_path, no_url_env) -> None:
    """A resharding moves the queue's slot to another primary, a few keys at a time, while
    the tasks run: calls that meet the split slot (ASK, TRYAGAIN) are retried until it has
    moved, then follow MOVED to the new owner (protocol/cluster.py); every task back once."""
    moved: list[int] = []

    def migrate(found: RedisClusterSet, owner: int) -> None:
        tag = "{" + queue_name + "}"
        other = next(n.port for n in found.nodes if n.port != owner and found.client(n.port).role()[0] == b"master")
        moved.append(found.migrate_slot(tag, other))

    _run_through(redis_cluster, queue_name, tmp_path, migrate).check("slot migration")  # (the cluster stays whole)
    assert moved and moved[0] > 100  # the slot held the queue's keys, moved in batches


def test_a_queue_client_follows_its_slot_to_the_new_primary(redis_cluster, queue_name, no_url_env) -> None:
    """What the failover tests rely on: after CLUSTER FAILOVER the same queue client (its
    connection to the demoted primary answered MOVED) writes on the new primary."""
    client = open_client(redis_cluster.url(0))
    tag = "{" + queue_name + "}"
    queue = cluster.queue_client(client, tag)
    queue.set(f"k{tag}", "before")
    old = redis_cluster.owner_port(tag)
    redis_cluster.client(redis_cluster.replica_of(old)).execute_command("CLUSTER", "FAILOVER")
    new = redis_cluster.wait_owner_moved(tag, old)
    assert queue.set(f"k{tag}", "after")
    assert redis.Redis(port=new).get(f"k{tag}") == b"after"
    redis_cluster.wait_ok()
