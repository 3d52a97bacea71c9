"""Durability levels (protocol/durability.py): WAIT / WAITAOF ride in the pipeline of the
submits and completions they guard, on a real master with a real replica."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
import redis
from conftest import Workers, drain
from helpers_tasks import my_sum
from sentinel_servers import ServerOn, server_binary

import wq_redis as wq
from wq_redis.embedded.server import RedisServer
from wq_redis.protocol import durability
from wq_redis.protocol.durability import DurabilityUnavailable, durability_from
from wq_redis.protocol.pipeline import ScriptPipeline


@pytest.fixture
def replicated(tmp_path, monkeypatch):
    """A master (AOF on) with one replica; yields the master."""
    monkeypatch.delenv("WQ_REDIS_URL", raising=False)
    monkeypatch.delenv("WQ_DURABILITY", raising=False)
    os.makedirs(tmp_path / "m")
    os.makedirs(tmp_path / "r")
    binary = server_binary()  # valkey's where installed: it has WAITAOF
    # (no diskless-sync delay: the replica's first sync would wait 5 s for others to join;
    # shutdown-timeout 0: a server's exit would wait for its replicas)
    quick = ["--repl-diskless-sync-delay", "0", "--shutdown-timeout", "0"]
    master = ServerOn(binary, data_dir=str(tmp_path / "m"), extra_args=quick).start()
    replica = ServerOn(
        binary,
        data_dir=str(tmp_path / "r"),
        extra_args=["--replicaof", "127.0.0.1", str(master.port), *quick],
    )
    replica.start()
    client = redis.Redis(port=master.port)
    try:
        assert client.wait(1, 10000) == 1
        yield master
    finally:
        client.close()
        # a replica writes its initial AOF after its first sync and ignores SIGTERM meanwhile
        # (it logs "Writing initial AOF, can't exit"): killed, as nothing of it is read again
        replica.stop(timeout=0.2)
        master.stop(timeout=2)  # (one whose AOF a test turned off may not exit on SIGTERM at once)


def waits(url: str, command: str = "wait") -> int:
    stats = redis.Redis.from_url(url).info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def has_waitaof(client: redis.Redis) -> bool:
    try:
        client.execute_command("WAITAOF", 0, 0, 1)
        return True
    except redis.ResponseError as exc:
        assert "unknown command" in str(exc).lower(), exc
        return False


def test_a_level_is_one_of_three() -> None:
    assert durability_from(None) == "none"
    assert durability_from("Replica") == "replica"
    with pytest.raises(ValueError, match="one of none, replica, aof"):
        durability_from("sync")


def test_replica_waits_in_the_same_round_trip_as_the_submit(replicated, queue_name, monkeypatch) -> None:
    trips = []
    real = ScriptPipeline._round_trip

    def counted(self, commands, early=None):
        trips.append([c[0] for c in commands])
        return real(self, commands, early)

    monkeypatch.setattr(ScriptPipeline, "_round_trip", counted)
    for level in ("none", "replica"):
        with wq.WorkQueue(f"{queue_name}-{level}", redis_url=replicated.url, durability=level) as q:
            trips.clear()
            q.submit(wq.PythonTask(my_sum, 1, 2))
            q._send_buffered()
            submits = [t for t in trips if "EVALSHA" in t]
            if level == "none":
                plain = len(submits)
                assert not any("WAIT" in t for t in trips)
            else:
                assert len(submits) == plain  # no round trip more
                assert any(t[-1] == "WAIT" for t in submits)


def test_workers_deliver_with_replica_durability_and_results_come_back(replicated, queue_name) -> None:
    before = waits(replicated.url)
    pool = Workers(replicated.url, queue_name)
    try:
        with wq.WorkQueue(queue_name, redis_url=replicated.url, durability="replica") as q:
            assert q.worker_environment()["WQ_DURABILITY"] == "replica"
            pool.start("--cores", "2", "--durability", "replica")
            for i in range(30):
                q.submit(wq.PythonTask(my_sum, i, 1))
            done = drain(q, 30, timeout=60)
            assert sorted(t.output for t in done) == [i + 1 for i in range(30)]
    finally:
        pool.stop_all()
    assert waits(replicated.url) > before  # submits' and completions' WAITs reached the master


def test_no_replica_to_acknowledge_warns_once_and_the_submit_stands(redis_url, queue_name, caplog, monkeypatch) -> None:
    monkeypatch.setattr(durability, "WAIT_TIMEOUT_MS", 200)  # each WAIT times out: no need of a whole second
    caplog.set_level(logging.WARNING, logger="wq_redis.protocol.durability")
    with wq.WorkQueue(queue_name, redis_url=redis_url, durability="replica") as q:
        for i in range(2):
            q.submit(wq.PythonTask(my_sum, i, 1))
            q._send_buffered()
        assert q.stats.tasks_waiting == 2
    lines = [r for r in caplog.records if "no replica acknowledged" in r.getMessage()]
    assert len(lines) == 1 and "within 200 ms" in lines[0].getMessage()


def test_aof_waits_for_the_fsync_where_the_server_has_waitaof(replicated, queue_name) -> None:
    client = redis.Redis.from_url(replicated.url)
    if not has_waitaof(client):
        pytest.skip("this server has no WAITAOF")
    with wq.WorkQueue(queue_name, redis_url=replicated.url, durability="aof") as q:
        q.submit(wq.PythonTask(my_sum, 1, 2))
        q._send_buffered()
    assert waits(replicated.url, "waitaof") >= 1


def test_aof_without_the_servers_aof_is_refused_at_construction(replicated, queue_name) -> None:
    client = redis.Redis.from_url(replicated.url)
    if not has_waitaof(client):
        pytest.skip("this server has no WAITAOF")
    client.config_set("appendonly", "no")
    with pytest.raises(wq.DurabilityUnavailable, match="appendonly"):
        wq.WorkQueue(queue_name, redis_url=replicated.url, durability="aof")


def test_aof_on_a_server_without_waitaof_names_its_version(tmp_path, queue_name, monkeypatch) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary (Debian's 7.0 has no WAITAOF)")
    server = RedisServer(data_dir=str(tmp_path))
    server.start()
    try:
        if has_waitaof(redis.Redis(port=server.port)):
            pytest.skip("this redis-server has WAITAOF")
        with pytest.raises(DurabilityUnavailable, match=r"Redis >= 7\.2.*this server is Redis 7\."):
            wq.WorkQueue(queue_name, redis_url=server.url, durability="aof")
    finally:
        server.stop()
