"""Workers on other hosts, for real: three hosts on this machine.

Each host is a Linux network namespace with its own interface and address, joined by veth
pairs to a bridge in the Redis host; the manager stays in the root namespace and reaches
the bridge through a veth of its own:

    root ns (manager) 10.213.N.10 ─┐
    host "alpha"      10.213.N.2  ─┼─ bridge in the Redis host 10.213.N.1 (`wq-redis server`)
    host "beta"       10.213.N.3  ─┘

The addresses exist only on these veths, inside namespaces this test creates; nothing
leaves the machine.  Each worker runs in its own UTS namespace with its own hostname, so
results name the host that ran them.  Needs root and iproute2; skipped otherwise, except
in CI (CI=true), which runs as root and must run it.  Namespaces, veths and processes are
removed at teardown, also when the test fails.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis
from conftest import drain, wait_until

import wq_redis as wq

HOSTS = {"alpha": 2, "beta": 3}  # host name -> last octet of its address
REDIS_OCTET, MANAGER_OCTET = 1, 10


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _free_subnet() -> str:
    """A 10.213.N prefix no interface or route of this machine uses yet."""
    taken = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    taken += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for n in random.sample(range(1, 255), 254):
        if f"10.213.{n}." not in taken:
            return f"10.213.{n}"
    raise RuntimeError("every 10.213.N/24 is in use")


class Hosts:
    """The namespaces, the bridge and the veths; ``close`` removes all of them."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.prefix = _free_subnet()
        self.redis_ns = f"wqt-{tag}-redis"
        self.worker_ns = {host: f"wqt-{tag}-{host}" for host in HOSTS}
        self.manager_link = f"wq{tag}m"  # the one interface in the root namespace
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def address(self, octet: int) -> str:
        return f"{self.prefix}.{octet}"

    def build(self) -> Hosts:
        redis_ns = self.redis_ns
        for ns in (redis_ns, *self.worker_ns.values()):
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", redis_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", redis_ns, "addr", "add", f"{self.address(REDIS_OCTET)}/24", "dev", "br0")
        _ip("-n", redis_ns, "link", "set", "br0", "up")
        for host, octet in HOSTS.items():
            ns = self.worker_ns[host]
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"to-{host}", "netns", redis_ns)
            self._plug(f"to-{host}")
            _ip("-n", ns, "addr", "add", f"{self.address(octet)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("link", "add", self.manager_link, "type", "veth", "peer", "name", "to-manager", "netns", redis_ns)
        self._plug("to-manager")
        _ip("addr", "add", f"{self.address(MANAGER_OCTET)}/24", "dev", self.manager_link)
        _ip("link", "set", self.manager_link, "up")
        return self

    def _plug(self, link: str) -> None:
        _ip("-n", self.redis_ns, "link", "set", link, "master", "br0")
        _ip("-n", self.redis_ns, "link", "set", link, "up")

    def spawn(
        self, ns: str, hostname: str, args: list[str], env: dict[str, str], stdout: int | None = None
    ) -> subprocess.Popen[bytes]:
        """Run ``args`` in namespace ``ns`` under its own hostname (a UTS namespace)."""
        command = [
            "ip",
            "netns",
            "exec",
            ns,
            "unshare",
            "--uts",
            "sh",
            "-c",
            f'hostname {hostname} && exec "$@"',
            "sh",
            *args,
        ]
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=stdout)
        self.processes.append(process)
        return process

    def close(self) -> None:
        # each process exec'd down to the real program (ip, unshare and sh all exec): its pid
        # is the program's.  SIGTERM first, so the server removes its data directory.
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for ns in self.namespaces:  # deleting a namespace deletes the veth ends inside it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.manager_link], capture_output=True)


def _cannot_build_hosts() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = _cannot_build_hosts()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the namespace test: {reason}")
        pytest.skip(reason)
    built = Hosts()
    try:
        built.build()
    except subprocess.CalledProcessError as exc:
        built.close()
        message = f"cannot create network namespaces here: {' '.join(exc.cmd)}: {exc.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield built
    finally:
        built.close()


def _read_json_line(process: subprocess.Popen[bytes], timeout: float) -> dict[str, object]:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "wq-redis server printed nothing"
    return dict(json.loads(process.stdout.readline()))


def test_workers_in_other_namespaces_run_tasks_and_report_their_hosts(hosts: Hosts, queue_name: str) -> None:
    password = secrets.token_urlsafe(16)
    env = {**os.environ, "WQ_SERVER_PASSWORD": password}
    env.pop("WQ_REDIS_URL", None)
    server = hosts.spawn(
        hosts.redis_ns,
        "redis-host",
        [sys.executable, "-m", "wq_redis", "server", "--host", hosts.address(REDIS_OCTET), "--port", "6379", "--json"],
        env,
        stdout=subprocess.PIPE,
    )
    ready = _read_json_line(server, 15)
    url = f"redis://:{password}@{hosts.address(REDIS_OCTET)}:6379/0"
    assert ready["url"] == url
    for host in HOSTS:
        hosts.spawn(
            hosts.worker_ns[host],
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
