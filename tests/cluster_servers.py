"""A real Redis Cluster on loopback for the tests: three primaries and three replicas,
each a ``redis-server --cluster-enabled yes`` process on a free port (its cluster bus,
port + 10000, free too), joined by ``redis-cli --cluster create --cluster-replicas 1``,
stopped by PID.

The binaries are Debian's redis-server and redis-cli (``make redis``), else valkey's.
NODE_TIMEOUT_MS is the cluster's ``cluster-node-timeout``: a killed primary is judged
down, and its replica elected, a second or two after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

import redis

from wq_redis.embedded.server import RedisServer, free_port

NODE_TIMEOUT_MS = 1000
SLOTS = 16384


def binaries() -> tuple[str, str] | None:
    """(server, cli) able to make a cluster, or None."""
    for server, cli in (("redis-server", "redis-cli"), ("valkey-server", "valkey-cli")):
        found_server, found_cli = shutil.which(server), shutil.which(cli)
        if found_server and found_cli:
            return found_server, found_cli
    return None


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


class ClusterNode(RedisServer):
    """One node of the cluster (no AOF: a killed primary's replica takes over)."""

    def __init__(self, binary: str, **options: Any) -> None:
        super().__init__(**options)
        self.binary = binary

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            os.path.join(self.data_dir, "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--appendonly",
            "no",
        ]


class RedisClusterSet:
    """Three primaries, three replicas; ``url(i)`` is node i's plain URL."""

    def __init__(self, primaries: int = 3, replicas: int = 1) -> None:
        found = binaries()
        if found is None:
            raise FileNotFoundError("redis-server and redis-cli (make redis) are needed for a cluster")
        self.server_binary, self.cli = found
        self.dir = tempfile.mkdtemp(prefix="wq-cluster-")
        self.nodes: list[ClusterNode] = []
        try:
            for i in range(primaries * (1 + replicas)):
                data = os.path.join(self.dir, f"node{i}")
                os.makedirs(data)
                node = ClusterNode(self.server_binary, data_dir=data, port=free_cluster_port())
                node.start()
                self.nodes.append(node)
            subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def url(self, index: int = 0) -> str:
        return f"redis://127.0.0.1:{self.nodes[index].port}"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok, with all slots covered and every
        replica linked to its primary."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._ok(node.port) for node in self.nodes if node.process is not None):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not come up in {timeout} s: {self.dir}")
            time.sleep(0.1)

    def _ok(self, port: int) -> bool:
        client = self.client(port)
        try:
            info = client.cluster("info")
            if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != SLOTS:
                return False
            role = client.role()
            return role[0] == b"master" or role[3] == b"connected"
        finally:
            client.close()

    def owner_port(self, key: str) -> int:
        """The port of the primary that owns ``key``'s slot now (asked of a live node)."""
        for node in self.nodes:
            if node.process is None:
                continue
            client = self.client(node.port)
            try:
                slot = client.cluster("keyslot", key)
                for start, end, primary, *_ in client.cluster("slots"):
                    if start <= slot <= end:
                        return int(primary[1])
            except redis.RedisError:
                continue
            finally:
                client.close()
        raise RuntimeError(f"no live node knows the owner of {key!r}")

    def replica_of(self, primary_port: int) -> int:
        """The port of a replica of the primary on ``primary_port``."""
        for node in self.nodes:
            if node.process is None or node.port == primary_port:
                continue
            client = self.client(node.port)
            try:
                role = client.role()
                if role[0] == b"slave" and int(role[2]) == primary_port:
                    return node.port
            finally:
                client.close()
        raise RuntimeError(f"no replica of {primary_port}")

    def node_on(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (its PID)."""
        node = self.node_on(port)
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(10)
        node.process = None

    def wait_owner_moved(self, key: str, old_port: int, timeout: float = 30.0) -> int:
        """Until a primary other than ``old_port`` owns ``key``'s slot and takes writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                port = self.owner_port(key)
                if port != old_port:
                    client = self.client(port)
                    try:
                        if client.role()[0] == b"master":
                            return port
                    finally:
                        client.close()
            except (redis.RedisError, RuntimeError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the slot of {key!r} did not leave {old_port} within {timeout} s")

    def migrate_slot(self, key: str, to_port: int, batch: int = 5, pause: float = 0.02) -> int:
        """Move ``key``'s slot to the primary on ``to_port`` as ``redis-cli --cluster
        reshard`` does (IMPORTING, MIGRATING, MIGRATE in batches of ``batch`` keys with
        ``pause`` between them, so that the slot stays split a while, then SETSLOT NODE on
        every primary); returns how many keys moved."""
        source_port = self.owner_port(key)
        source, target = self.client(source_port), self.client(to_port)
        slot = source.cluster("keyslot", key)
        source_id, target_id = source.execute_command("CLUSTER", "MYID"), target.execute_command("CLUSTER", "MYID")
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while True:
            keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(pause)
        for node in self.nodes:
            if node.process is None:
                continue
            client = self.client(node.port)
            try:
                if client.role()[0] == b"master":
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            finally:
                client.close()
        source.close()
        target.close()
        return moved

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
