"""Workers on other hosts, for real: three hosts on this machine.

Each host is a Linux network namespace with its own interface and address, joined by veth
pairs to a bridge (the harness is tests/netns_hosts.py); the manager stays in the root
namespace and reaches the bridge through a veth of its own:

    host "redis-host" 10.213.N.1  ─┐ (`wq-redis server`)
    host "alpha"      10.213.N.2  ─┼─ bridge (tests/netns_hosts.py)
    host "beta"       10.213.N.3  ─┤
    root ns (manager) 10.213.N.10 ─┘

The addresses exist only on these veths, inside namespaces this test creates; nothing
leaves the machine.  Each worker runs in its own UTS namespace with its own hostname, so
results name the host that ran them.  Needs root and iproute2; skipped otherwise, except
in CI (CI=true), which runs as root and must run it.  Namespaces, veths and processes are
removed at teardown, also when the test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis
from conftest import drain, wait_until
from netns_hosts import Network, network_or_skip

import wq_redis as wq

HOSTS = {"alpha": 2, "beta": 3}  # host name -> last octet of its address
REDIS_HOST, REDIS_OCTET, MANAGER_OCTET = "redis-host", 1, 10


def _plan(network: Network) -> None:
    network.add_host(REDIS_HOST, REDIS_OCTET)
    for host, octet in HOSTS.items():
        network.add_host(host, octet)
    network.add_root(MANAGER_OCTET)


@pytest.fixture
def hosts() -> Iterator[Network]:
    built = network_or_skip(_plan)
    try:
        yield built
    finally:
        built.close()


def _read_json_line(process: subprocess.Popen[bytes], timeout: float) -> dict[str, object]:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "wq-redis server printed nothing"
    return dict(json.loads(process.stdout.readline()))


def test_workers_in_other_namespaces_run_tasks_and_report_their_hosts(hosts: Network, queue_name: str) -> None:
    password = secrets.token_urlsafe(16)
    env = {**os.environ, "WQ_SERVER_PASSWORD": password}
    env.pop("WQ_REDIS_URL", None)
    server = hosts.spawn(
        REDIS_HOST,
        [sys.executable, "-m", "wq_redis", "server", "--host", hosts.address(REDIS_OCTET), "--port", "6379", "--json"],
        env,
        stdout=subprocess.PIPE,
    )
    ready = _read_json_line(server, 15)
    url = f"redis://:{password}@{hosts.address(REDIS_OCTET)}:6379/0"
    assert ready["url"] == url
    for host in HOSTS:
        hosts.spawn(
            host,
            [
                sys.executable,
                "-m",
                "wq_redis",
                "worker",
                "--queue",
                queue_name,
                "--cores",
                "2",
                "--tags",
                host,
                "--name",
                f"w-{host}",
                "--log-level",
                "warning",
            ],
            {**env, "WQ_REDIS_URL": url},
        )

    with wq.WorkQueue(queue_name, redis_url=url) as queue:
        tasks = []
        for host in HOSTS:
            for _ in range(3):
                tasks.append(wq.PythonTask(socket.gethostname))
                tasks[-1].specify_tag(host)
            tasks.append(wq.Task("hostname"))
            tasks[-1].specify_tag(host)
        queue.submit_many(tasks)
        done = drain(queue, len(tasks), timeout=30)

        assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in done), [t.error for t in done]
        for task in done:
            assert task.hostname == task.tag, f"task {task.id} tagged {task.tag} ran on {task.hostname}"
            assert str(task.output).strip() == task.tag  # what the task itself saw

        client = redis.Redis.from_url(url)
        workers = {name.decode() for name in client.zrange(queue._store.keys.workers, 0, -1)}
        assert workers == {f"w-{host}@{host}" for host in HOSTS}
        # the workers' and the manager's connections arrive over the veths, from their own hosts
        peers = {entry["addr"].rsplit(":", 1)[0] for entry in client.client_list()}
        assert {hosts.address(octet) for octet in [*HOSTS.values(), MANAGER_OCTET]} <= peers
        client.close()

    for process in hosts.processes[1:]:  # workers drain and exit on SIGTERM
        process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: all(p.poll() is not None for p in hosts.processes[1:]), 15)
