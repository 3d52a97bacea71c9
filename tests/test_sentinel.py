"""Redis Sentinel: ``redis+sentinel://`` URLs everywhere a Redis URL goes, and a run that
goes on through a failover (``SENTINEL FAILOVER``, and the master SIGKILLed) with every
task back once, on real servers: one master, one replica, three sentinels on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import redis
from conftest import Workers, wait_until
from failover_tasks import stamped_work
from helpers_tasks import my_sum
from sentinel_servers import DOWN_AFTER_MS, SERVICE, SentinelSet

import wq_redis as wq
from wq_redis.protocol import sentinel
from wq_redis.protocol.connection import check_url, client_from, open_client, safe_url, settings_of

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


def _run_through(sentinels: SentinelSet, queue_name: str, tmp_path, fail_over, count: int = 800):
    """``count`` logged tasks on two workers; ``fail_over`` (given the set) runs once a
    quarter are back.  Returns the tasks, the executions per task id, when the failover
    began and when the new master took writes, and when each task came back."""
    log = tmp_path / "runs.log"
    pool = Workers(sentinels.url, queue_name)
    received: list[tuple[float, wq.Task]] = []
    times: dict[str, float] = {}
    try:
        with wq.WorkQueue(queue_name, redis_url=sentinels.url) as q:
            for _ in range(2):
                pool.start("--cores", "2", "--lease-seconds", "5")
            tasks = [wq.PythonTask(stamped_work, str(log), 0.01, i) for i in range(count)]
            for task in tasks:
                task.specify_cores(1)
            q.submit_many(tasks)
            thread = None
            deadline = time.monotonic() + 180
            while len(received) < count and time.monotonic() < deadline:
                task = q.wait(1)
                if task is not None:
                    received.append((time.monotonic(), task))
                if thread is None and len(received) >= count // 4:
                    old = sentinels.master_port()

                    def failover(old: int = old) -> None:
                        times["failover"] = time.monotonic()
                        fail_over(sentinels)
                        sentinels.wait_promoted(old)
                        times["promoted"] = time.monotonic()

                    thread = threading.Thread(target=failover)
                    thread.start()
            assert thread is not None
            thread.join(60)
            assert q.empty()
    finally:
        pool.stop_all()
    runs: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        task_id, started = line.split()
        runs.setdefault(task_id, []).append(float(started))
    return tasks, runs, times, received


def _check(tasks, runs, times, received, scenario: str) -> None:
    ids = Counter(t.id for _, t in received)
    lost = len({t.id for t in tasks} - set(ids))
    twice = [i for i, n in ids.items() if n > 1]
    beyond = sum(len(starts) - 1 for starts in runs.values())
    # a task runs twice where the failover lost its claim or its completion: written to the
    # old master before the clients could know of the new one (the sentinels announce it,
    # +switch-master, once they saw it promoted: sentinel_watch.py)
    known = times["promoted"] + 1.0
    repeated = [min(starts) for starts in runs.values() if len(starts) > 1]
    late = [start - times["failover"] for start in repeated if start > known]
    after = [at for at, _ in received if at > times["promoted"]]
    resumed = after[0] - times["failover"] if after else float("inf")
    print(
        f"\n{scenario}: tasks lost {lost}, returned twice {len(twice)}, executions beyond one {beyond}, "
        f"promoted after {times['promoted'] - times['failover']:.2f} s, "
        f"first completion after the failover at {resumed:.2f} s; tasks first run between the failover and when "
        f"the clients knew the new master: {sum(1 for r in runs.values() if times['failover'] <= min(r) <= known)}"
    )
    assert lost == 0 and not twice
    assert sorted(t.output for _, t in received) == list(range(len(tasks)))
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for _, t in received)
    assert resumed <= RESUME_BOUND
    assert not late, f"tasks first run after the failover was known ran twice (seconds after it): {late}"


@pytest.mark.faults
def test_sentinel_failover_mid_run_every_task_back_once(sentinels, queue_name, tmp_path) -> None:
    def fail_over(found: SentinelSet) -> None:
        found.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE)

    _check(*_run_through(sentinels, queue_name, tmp_path, fail_over), "SENTINEL FAILOVER")


@pytest.mark.faults
def test_master_sigkilled_mid_run_every_task_back_once(sentinels, queue_name, tmp_path) -> None:
    def kill_master(found: SentinelSet) -> None:
        found.server_on(found.master_port()).kill()

    _check(*_run_through(sentinels, queue_name, tmp_path, kill_master), "master SIGKILL")


def _our_sentinel_connections(sentinels: SentinelSet) -> list[dict[str, str]]:
    """Every connection to the three sentinels but their own to each other and the probe's."""
    found = []
    for index in range(3):
        probe = sentinels.sentinel(index)
        probe.client_setname("probe")
        for line in probe.execute_command("CLIENT", "LIST").decode().splitlines():
            fields = dict(item.partition("=")[::2] for item in line.split())
            if not fields["name"].startswith("sentinel-") and fields["name"] != "probe":
                found.append(fields)
        probe.close()
    return found


def test_a_process_watches_the_sentinels_on_one_subscription_without_polling(sentinels) -> None:
    """Issue 17's thousands of workers: a process's clients (here three, as a worker's
    stores) cost the sentinels one subscribed connection and no call while the master
    stays where it is."""
    clients = [open_client(sentinels.url) for _ in range(3)]
    for client in clients:
        client.set("k", "v")
    assert wait_until(lambda: sum(c["sub"] == "1" for c in _our_sentinel_connections(sentinels)) == 1, 10)
    before = sum(int(c["tot-cmds"]) for c in _our_sentinel_connections(sentinels))
    time.sleep(2)  # a poll (each 0.5 s, per client) would ask in this time
    after = _our_sentinel_connections(sentinels)
    assert sum(c["sub"] == "1" for c in after) == 1
    assert sum(int(c["tot-cmds"]) for c in after) == before


def test_one_client_follows_a_failover_without_a_restart(sentinels) -> None:
    """What the failover tests rely on: once the old master is demoted, a write through
    the same client lands on the new master (its connection cut by the watch, or refused
    READONLY and retried by redis-py on a fresh one that asks the sentinels)."""
    client = open_client(sentinels.url)
    client.set("k", "before")
    old = sentinels.master_port()
    sentinels.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE)
    new = sentinels.wait_promoted(old)
    demoted = redis.Redis(port=old)
    deadline = time.monotonic() + 30
    while demoted.role()[0] not in (b"slave", "slave") and time.monotonic() < deadline:
        time.sleep(0.1)  # the sentinels reconfigure the old master a few seconds later
    assert client.set("k", "after")  # on the new master, without a restart
    assert redis.Redis(port=new).get("k") == b"after"


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
