"""Least-privilege Redis users (ACL): a read-only user runs `status` and the exporter, and
a worker whose user may not name its connections still runs tasks."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
from conftest import drain
from helpers_tasks import my_sum
from monitoring_helpers import http_get, samples

import wq_redis as wq
from wq_redis.ops.exporter import QueueExporter
from wq_redis.protocol.store import connect

READ_ONLY = ["-@all", "+@read", "+@connection", "+evalsha_ro", "+eval_ro"]


class AclUsers:
    """ACL users made on the test Redis; deleted at teardown."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.admin = redis.Redis.from_url(redis_url)
        self.names: list[str] = []

    def make(self, *rules: str) -> str:
        """A user with ``rules``; returns its URL."""
        name, password = f"t-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        self.admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)
        self.names.append(name)
        parts = urlsplit(self.redis_url)
        return f"redis://{name}:{password}@{parts.hostname}:{parts.port}/0"

    def delete_all(self) -> None:
        if self.names:
            self.admin.execute_command("ACL", "DELUSER", *self.names)
        self.admin.close()


@pytest.fixture
def acl(redis_url: str) -> Iterator[AclUsers]:
    users = AclUsers(redis_url)
    yield users
    users.delete_all()


def status_json(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wq_redis", "status", "--redis-url", url, "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_runs_with_a_read_only_user(redis_url, queue, acl):
    queue.submit_many([wq.PythonTask(my_sum, i, 1) for i in range(3)])
    queue._buffer.flush()
    url = acl.make(f"%R~wq:{{{queue.name}}}:*", *READ_ONLY)
    shown = status_json(url, "--queue", queue.name, "--workers", "--tasks", "--categories")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)["queues"][0]
    assert report["name"] == queue.name and report["waiting"] == 3 and len(report["tasks"]) == 3


def test_status_discovery_skips_queues_the_user_cannot_read(redis_url, queue, acl):
    queue.submit(wq.PythonTask(my_sum, 1, 1))
    queue._buffer.flush()
    with wq.WorkQueue(queue.name + "-hidden", redis_url=redis_url) as hidden:
        hidden.submit(wq.PythonTask(my_sum, 1, 1))
        hidden._buffer.flush()
        url = acl.make(f"%R~wq:{{{queue.name}}}:*", *READ_ONLY)
        shown = status_json(url)
        assert shown.returncode == 0, shown.stderr
        assert [q["name"] for q in json.loads(shown.stdout)["queues"]] == [queue.name]
        assert f"queue '{queue.name}-hidden' skipped" in shown.stderr
        hidden.cancel_by_category("default")


def test_the_exporter_and_its_service_discovery_work_for_a_read_only_user(redis_url, queue, acl):
    queue.submit_many([wq.PythonTask(my_sum, i, 1) for i in range(2)])
    queue._buffer.flush()
    with wq.WorkQueue(queue.name + "-hidden", redis_url=redis_url) as hidden:
        hidden.submit(wq.PythonTask(my_sum, 1, 1))
        hidden._buffer.flush()
        client = connect(acl.make(f"%R~wq:{{{queue.name}}}:*", *READ_ONLY))
        exporter = QueueExporter(client)  # finds the queues by SCAN, the hidden one too
        try:
            server = exporter.serve("127.0.0.1", range(0, 1))
            status, body = http_get(f"http://{server.address}/metrics")
            parsed = samples(body)
            assert status == 200 and parsed[("wq_redis_up", ())] == 1
            assert parsed[("wq_tasks_waiting", (("queue", queue.name), ("resource_class", "c-1"), ("tag", "")))] == 2
            assert not any(("queue", queue.name + "-hidden") in labels for _, labels in parsed)
            status, body = http_get(f"http://{server.address}/sd")
            assert status == 200 and json.loads(body) == []
        finally:
            exporter.close()
            client.close()
        hidden.cancel_by_category("default")


@pytest.mark.parametrize("cores", ["1", "2"])
def test_a_worker_whose_user_may_not_name_connections_runs_tasks(redis_url, queue, workers, acl, cores):
    url = acl.make("~*", "&*", "+@all", "-client|setname")
    workers.redis_url = url
    process = workers.start("--cores", cores)
    queue.submit_many([wq.PythonTask(my_sum, i, 1) for i in range(10)])
    assert sorted(t.output for t in drain(queue, 10, timeout=60)) == [i + 1 for i in range(10)]
    assert process.poll() is None
