"""A Redis that takes no writes for a while is an outage, not an error: a master demoted
under a plain ``redis://`` URL (READONLY) and one with ``min-replicas-to-write`` and no
replica (NOREPLICAS).  The manager's calls wait (client/reconnect.py) and the worker
keeps trying (worker/outage.py), each logging once, and the run goes on once Redis takes
writes again.  Real servers: the test's own Redis, made a replica of a port where nothing
listens (read-only, its data kept), or given min-replicas-to-write 1."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from conftest import TESTS_DIR, wait_until
from helpers_tasks import my_sum

import wq_redis as wq
from wq_redis.embedded.server import RedisServer, free_port
from wq_redis.protocol.pipeline import not_writable, outage

OUTAGE_AFTER_SECONDS = 0.5  # how long the test keeps Redis from taking writes once both met it


@pytest.fixture
def own_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    monkeypatch.delenv("WQ_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    server = RedisServer().start()
    yield server
    server.stop()


def demote(admin: redis.Redis) -> Callable[[], None]:
    """Make the server a replica (of nothing reachable): READONLY; returns the undo."""
    admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    return lambda: admin.execute_command("REPLICAOF", "NO", "ONE")


def starve(admin: redis.Redis) -> Callable[[], None]:
    """Ask for a replica that is not there: NOREPLICAS; returns the undo."""
    admin.config_set("min-replicas-to-write", 1)
    return lambda: admin.config_set("min-replicas-to-write", 0)


def test_the_refusals_of_a_redis_that_takes_no_writes_are_outages(own_redis) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    for refuse in (demote, starve):
        undo = refuse(admin)
        with pytest.raises(redis.ResponseError) as refused:
            admin.eval("return redis.call('set', KEYS[1], 1)", 1, "k")
        undo()
        assert not_writable(refused.value) and outage(refused.value)
    undo = starve(admin)
    pipe = admin.pipeline(transaction=False)
    pipe.set("k", 1)
    with pytest.raises(redis.ResponseError) as wrapped:  # redis-py puts the command before the code
        pipe.execute()
    undo()
    assert "pipeline" in str(wrapped.value) and outage(wrapped.value)
    admin.set("k", "x")  # a string that is no number: INCR's refusal is no outage
    with pytest.raises(redis.ResponseError) as other:
        admin.eval("return redis.call('incr', KEYS[1])", 1, "k")
    assert not outage(other.value)


@pytest.mark.parametrize("refuse", [demote, starve], ids=["READONLY", "NOREPLICAS"])
def test_manager_and_worker_wait_out_a_redis_that_takes_no_writes(
    refuse, own_redis, queue_name, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    log = tmp_path / "worker.log"
    path = os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))
    with wq.WorkQueue(queue_name, redis_url=own_redis.url) as q, open(log, "wb") as out:
        for i in range(5):
            q.submit(wq.PythonTask(my_sum, i, 1))
        undo = refuse(admin)
        worker = subprocess.Popen(  # it starts while Redis refuses its writes
            [sys.executable, "-m", "wq_redis", "worker", "--redis-url", own_redis.url, "--queue", queue_name],
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:

            def undo_once_both_met_it() -> None:
                # until the worker's registration and the manager's submit were refused (each
                # says so), then on a little: both keep trying meanwhile
                wait_until(
                    lambda: (
                        "calls to Redis at" in log.read_text()
                        and any("takes no writes" in r.getMessage() for r in list(caplog.records))
                    ),
                    timeout=30,
                )
                time.sleep(OUTAGE_AFTER_SECONDS)
                undo()

            undoer = threading.Thread(target=undo_once_both_met_it)
            undoer.start()
            with caplog.at_level(logging.WARNING, logger="wq_redis.client.queue"):
                q.submit(wq.PythonTask(my_sum, 5, 1))  # refused until undone: waits, then goes in
                done = [q.wait(30) for _ in range(6)]
            undoer.join()
            assert worker.poll() is None, log.read_text()
        finally:
            worker.terminate()
            worker.wait(30)
    assert sorted(t.output for t in done if t is not None) == [i + 1 for i in range(6)]
    waits = [r.getMessage() for r in caplog.records if "takes no writes" in r.getMessage()]
    assert len(waits) == 1, waits
    assert len([r for r in caplog.records if "is back after" in r.getMessage()]) == 1
    worker_lines = log.read_text().splitlines()
    assert sum("calls to Redis at" in line for line in worker_lines) == 1, worker_lines
    assert not [line for line in worker_lines if "Traceback" in line], worker_lines
