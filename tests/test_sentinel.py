"""Redis Sentinel: ``redis+sentinel://`` URLs everywhere a Redis URL goes, and a run that
goes on through a failover (``SENTINEL FAILOVER``, and the master SIGKILLed) with every
task back once, on real servers: one master, one replica, three sentinels on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import redis
from conftest import Workers, wait_until
from failover_run import FailoverRun, run_through
from helpers_tasks import my_sum
from sentinel_servers import DOWN_AFTER_MS, SERVICE, SentinelSet

import wq_redis as wq
from wq_redis.protocol import sentinel, sentinel_watch
from wq_redis.protocol.connection import check_url, client_from, open_client, safe_url, settings_of
from wq_redis.protocol.keys import QueueKeys
from wq_redis.protocol.sentinel_watch import SELECTED, SwitchWatch

RESUME_BOUND = DOWN_AFTER_MS / 1000 + 5  # the bound: down-after-milliseconds plus 5 s


def test_a_sentinel_url_names_sentinels_service_db_and_both_credentials() -> None:
    found = sentinel.parse(
        "redis+sentinel://me:s%40cret@10.0.0.1:26380,[::1]:26381,sentinel-3/jobs/2"
        "?sentinel_username=watch&sentinel_password=pw&socket_timeout=7"
    )
    assert found["sentinels"] == [("10.0.0.1", 26380), ("::1", 26381), ("sentinel-3", 26379)]
    assert found["service"] == "jobs"
    assert found["master"] == {"db": 2, "username": "me", "password": "s@cret", "socket_timeout": 7.0}
    assert found["sentinel"] == {"username": "watch", "password": "pw"}
    assert sentinel.parse("sentinel://h:1/svc")["service"] == "svc"  # the alias
    assert sentinel.parse("rediss+sentinel://h:1/svc")["master"]["ssl"] is True


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:1", "/SERVICE"),
        ("redis+sentinel://h:1/svc/x", "not a number"),
        ("redis+sentinel:///svc", "names no sentinel"),
        ("redis+sentinel://h:port/svc", "not a number"),
    ],
)
def test_a_wrong_sentinel_url_fails_in_one_line_that_says_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_url(url)


def test_the_scheme_error_shows_how_to_write_a_sentinel_url() -> None:
    with pytest.raises(ValueError, match=r"redis\+sentinel://host:port"):
        check_url("localhost:26379")


def test_messages_hide_both_passwords() -> None:
    shown = safe_url("redis+sentinel://u:master-pw@h:1/svc?sentinel_password=sentinel-pw&x=1")
    assert "master-pw" not in shown and "sentinel-pw" not in shown and "h:1/svc" in shown


@pytest.fixture
def sentinels(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WQ_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    found = SentinelSet()
    try:
        found.wait_ready()
        yield found
    finally:
        found.stop()


def test_queue_workers_lane_and_status_all_go_through_the_sentinels(sentinels, queue_name) -> None:
    client = open_client(sentinels.url)
    lane = client_from(settings_of(client), "lane")  # what a worker's fast lane opens
    assert lane.connection_pool.get_master_address()[1] == sentinels.master.port
    pool = Workers(sentinels.url, queue_name)
    try:
        with wq.WorkQueue(queue_name, redis_url=sentinels.url) as q:
            pool.start("--cores", "2")
            for i in range(20):
                q.submit(wq.PythonTask(my_sum, i, 1))
            done = [q.wait(30) for _ in range(20)]
            assert sorted(t.output for t in done if t is not None) == [i + 1 for i in range(20)]
            status = subprocess.run(
                [sys.executable, "-m", "wq_redis", "status", "--redis-url", sentinels.url, "--queue", queue_name],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert status.returncode == 0, status.stderr
            assert queue_name in status.stdout
    finally:
        pool.stop_all()


def _run_through(sentinels: SentinelSet, queue_name: str, tmp_path, fail_over) -> FailoverRun:
    """The shared run (failover_run.py) through the sentinels; ``fail_over`` is given the set."""
    old = sentinels.master_port()
    master = redis.Redis(port=old)
    leases = QueueKeys(queue_name).leases
    return run_through(
        sentinels.url,
        queue_name,
        tmp_path / "runs.log",
        lambda: fail_over(sentinels),
        lambda: sentinels.wait_promoted(old),
        lambda: master.zcard(leases),
    )


@pytest.mark.faults
def test_sentinel_failover_mid_run_every_task_back_once(sentinels, queue_name, tmp_path) -> None:
    def fail_over(found: SentinelSet) -> None:
        found.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE)

    _run_through(sentinels, queue_name, tmp_path, fail_over).check("SENTINEL FAILOVER", RESUME_BOUND)


@pytest.mark.faults
def test_master_sigkilled_mid_run_every_task_back_once(sentinels, queue_name, tmp_path) -> None:
    def kill_master(found: SentinelSet) -> None:
        found.server_on(found.master_port()).kill()

    _run_through(sentinels, queue_name, tmp_path, kill_master).check("master SIGKILL", RESUME_BOUND)


def _our_sentinel_connections(sentinels: SentinelSet) -> list[dict[str, str]]:
    """Every connection to the three sentinels but their own to each other and the probe's,
    each with ``sentinel``: the index of the sentinel it is on."""
    found = []
    for index in range(3):
        probe = sentinels.sentinel(index)
        probe.client_setname("probe")
        for line in probe.execute_command("CLIENT", "LIST").decode().splitlines():
            fields = dict(item.partition("=")[::2] for item in line.split())
            if not fields["name"].startswith("sentinel-") and fields["name"] != "probe":
                found.append({**fields, "sentinel": str(index)})
        probe.close()
    return found


def _subscribed(connections: list[dict[str, str]]) -> list[str]:
    """The sentinels (indexes) of the connections subscribed to channels, sorted."""
    return sorted(c["sentinel"] for c in connections if c["sub"] != "0")


def test_a_process_watches_each_sentinel_on_one_subscription_without_polling(sentinels) -> None:
    """Issue 17's thousands of workers: a process's clients (here three, as a worker's
    stores) cost each sentinel one subscribed connection (any of them may lead a failover,
    and only the leader tells its steps) and no call while the master stays where it is."""
    clients = [open_client(sentinels.url) for _ in range(3)]
    for client in clients:
        client.set("k", "v")
    assert wait_until(lambda: _subscribed(_our_sentinel_connections(sentinels)) == ["0", "1", "2"], 10)
    before = sum(int(c["tot-cmds"]) for c in _our_sentinel_connections(sentinels))
    time.sleep(2)  # a poll (each 0.5 s, per client) would ask in this time
    after = _our_sentinel_connections(sentinels)
    assert _subscribed(after) == ["0", "1", "2"]
    assert sum(int(c["tot-cmds"]) for c in after) == before


def test_one_client_follows_a_failover_without_a_restart(sentinels) -> None:
    """What the failover tests rely on: right after the promotion, while the old master
    still takes writes (the sentinels demote it seconds later), a write through the same
    client lands on the new master: the watch cut its connection when the failover began
    and held the new one until the replica was promoted."""
    client = open_client(sentinels.url)
    client.set("k", "before")
    old = sentinels.master_port()
    sentinels.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE)
    new = sentinels.wait_promoted(old)
    assert redis.Redis(port=old).role()[0] in (b"master", "master")  # not demoted yet
    assert client.set("k", "after")  # on the new master, without a restart
    assert redis.Redis(port=new).get("k") == b"after"
    assert redis.Redis(port=old).get("k") == b"before"


def test_a_blocked_wait_moves_to_the_new_master(sentinels) -> None:
    """A worker's wait for work (BLPOP) in flight at a failover is cut by the
    +switch-master watch and sent again to the new master, where the work arrives: the
    retry inside the call asks the sentinels again (redis-py's own reopened the socket
    on the old master's address)."""
    client = open_client(sentinels.url)
    client.ping()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(client.blpop(["wake"], 20)))
    waiter.start()
    old = sentinels.master_port()
    sentinels.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE)
    new = sentinels.wait_promoted(old)
    redis.Redis(port=new).lpush("wake", "work")
    waiter.join(30)
    assert got == [(b"wake", b"work")]


def test_no_write_acknowledged_during_a_failover_is_lost(sentinels) -> None:
    """Why tasks are not redone: from the failover's first event (+selected-slave, from
    whichever sentinel leads it) no client writes on the old master, so nothing it
    acknowledged is missing on the promoted replica.  Without the watch's move the old
    master takes writes for a second after the promotion, and they vanish with it."""
    client = open_client(sentinels.url)
    acknowledged = [0]
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            try:
                client.incr("n")
                acknowledged[0] += 1
            except redis.RedisError:
                time.sleep(0.01)  # refused or cut mid-call: not acknowledged

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert wait_until(lambda: acknowledged[0] > 100, 10)
        old = sentinels.master_port()
        sentinels.sentinel(2).execute_command("SENTINEL", "FAILOVER", SERVICE)  # not the first sentinel
        new = sentinels.wait_promoted(old)
        before = acknowledged[0]
        assert wait_until(lambda: acknowledged[0] > before + 100, 10)  # writing on the new master
    finally:
        stop.set()
        writer.join(10)
    # a call cut after the server ran it is sent again: at least, never fewer
    assert int(redis.Redis(port=new).get("n")) >= acknowledged[0]


def _client_with_a_move_begun(sentinels: SentinelSet) -> tuple[redis.Redis, SwitchWatch]:
    """A client (its key "k" set on the master), and its process's watch told that a
    failover to the replica began (+selected-slave, as the leading sentinel says it)."""
    client = open_client(sentinels.url)
    client.set("k", "0")
    watch = SwitchWatch._watches[id(client.connection_pool.sentinel_manager)]
    master, replica = sentinels.master.port, sentinels.replicas[0].port
    with watch.handling:
        watch._event(SELECTED, f"slave 127.0.0.1:{replica} 127.0.0.1 {replica} @ {SERVICE} 127.0.0.1 {master}".split())
    return client, watch


def test_a_failover_that_aborts_sends_the_held_connections_back(sentinels) -> None:
    """A failover's first event holds the connections; when the leader aborts it (here
    no replica would do) they open on the master the sentinels still name, the old one."""
    client, watch = _client_with_a_move_begun(sentinels)
    master = sentinels.master.port
    done: list[object] = []
    writer = threading.Thread(target=lambda: done.append(client.set("k", "1")))
    writer.start()
    time.sleep(0.5)
    assert not done  # held while the move lasts
    with watch.handling:
        watch._event("-failover-abort-no-good-slave", f"master {SERVICE} 127.0.0.1 {master}".split())
    writer.join(5)
    assert done == [True]
    assert redis.Redis(port=master).get("k") == b"1"


def test_a_failover_without_news_lets_the_held_connections_go(sentinels, monkeypatch) -> None:
    """A leader that falls silent after its first event (it died mid-failover): after
    MOVE_SECONDS the held connections go to the master the sentinels name, and so do
    later ones at once, without waiting again."""
    monkeypatch.setattr(sentinel_watch, "MOVE_SECONDS", 0.5)
    client, watch = _client_with_a_move_begun(sentinels)
    master = sentinels.master.port
    assert client.set("k", "1")  # held, then let go to the old master
    move = watch.moves[SERVICE]
    assert move.ended.is_set() and move.address is None  # ended: later connections do not wait
    client.connection_pool.disconnect()
    assert client.set("k", "2")
    assert redis.Redis(port=master).get("k") == b"2"
