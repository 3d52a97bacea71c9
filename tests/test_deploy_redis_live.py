"""The chart's Redis with sentinels, run for real: the start scripts the Helm chart renders
for the Redis and sentinel pods (deploy/helm/examples/sentinel.yaml's values) executed as
they are, one pod per host, then a failover and a pod restarted by "Kubernetes".

Each pod is a host of tests/netns_hosts.py: a network namespace with its own address, its
pod name as host name, and an /etc/hosts naming every pod by its headless-Service DNS name
(POD.SET-headless.wq.svc.cluster.local), so the scripts' `$(hostname)` and their lookups of
the other sentinels and Redis pods work as in a cluster.  A pod's volumes are directories
of the test, bind-mounted where the pod spec mounts them (the config maps' files, the
emptyDir and the data volume) in a mount namespace of the pod's own; its environment is the
pod spec's, with the chart's rendered Secret for the secretKeyRefs.  The container command
is run verbatim with Debian's redis-server 7.0 (`make redis`); the chart's image is
redis:7.2-alpine.  What differs from a cluster: no DNS server (hosts files), no probes
driving restarts (the test runs the readiness probe's command in the pod's namespaces and
restarts the killed pod itself), and the processes run as root.

The worker is the chart's worker Deployment (its args and environment, with --workdir and
HOME moved into the test's directory); the manager (tests/chart_live_manager.py) runs on a
host of its own, since only the hosts files resolve the URL's sentinel names.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import wait_until
from helpers_chart import ROOT, by_kind, container, example, expanded, render, worker_pools
from netns_hosts import Network, network_or_skip

import wq_redis as wq

pytestmark = pytest.mark.faults  # it SIGKILLs the primary

NS, DOMAIN = "wq", "cluster.local"  # helpers_chart.render's namespace, values' clusterDomain
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the image's
WORKER_HOST, MANAGER_HOST = "demo-wq-redis-cpu-5d8f7c-x2kq9", "manager"
ROOT_OCTET = 10


def _require_servers() -> None:
    missing = [tool for tool in ("redis-server", "redis-cli", "timeout") if shutil.which(tool) is None]
    if missing:
        reason = f"{', '.join(missing)} not found: `make redis` installs Debian's redis-server and redis-tools"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


class Pod:
    """One pod of a StatefulSet: its host (namespace), volumes (directories), environment
    and the container's command; ``start`` runs that command as the container would."""

    def __init__(self, network: Network, workload: dict[str, Any], index: int, octet: int, **chart: Any) -> None:
        self.network, self.octet = network, octet
        name = workload["metadata"]["name"]
        self.name = f"{name}-{index}"
        self.fqdn = f"{self.name}.{workload['spec']['serviceName']}.{NS}.svc.{DOMAIN}"
        self.container = container(workload)
        self.dir: Path = chart["tmp"] / self.name
        self.volumes = self._volumes(workload, chart["config_maps"])
        self.env = {"PATH": CONTAINER_PATH, "HOME": "/root", **expanded(self.container, chart["secrets"])}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return self.network.address(self.octet)

    def _volumes(self, workload: dict[str, Any], config_maps: dict[str, dict[str, Any]]) -> dict[str, Path]:
        spec = workload["spec"]
        volumes = {}
        for volume in spec["template"]["spec"]["volumes"]:
            path = volumes[volume["name"]] = self.dir / volume["name"]
            path.mkdir(parents=True)
            if "configMap" in volume:
                for key, text in config_maps[volume["configMap"]["name"]]["data"].items():
                    (path / key).write_text(text)
            else:
                assert "emptyDir" in volume, volume  # nothing else to stand in for
        for claim in spec.get("volumeClaimTemplates", []):  # a PersistentVolumeClaim per pod
            path = volumes[claim["metadata"]["name"]] = self.dir / claim["metadata"]["name"]
            path.mkdir(parents=True)
        return volumes

    def file(self, volume: str, name: str) -> str:
        return (self.volumes[volume] / name).read_text()

    def start(self) -> None:
        """Run the container's command (again: a restart keeps the volumes, as a container
        restarted in its pod, or a pod back on its claim, does)."""
        self.starts += 1
        mounts = self.container["volumeMounts"]
        with open(self.dir / f"log{self.starts}", "wb") as log:  # the process has its own copy
            self.process = self.network.spawn(
                self.name,
                [*self.container["command"], *self.container.get("args", [])],
                self.env,
                stdout=log.fileno(),
                stderr=subprocess.STDOUT,
                mounts={m["mountPath"]: str(self.volumes[m["name"]]) for m in mounts},
                read_only={m["mountPath"] for m in mounts if m.get("readOnly")},
            )

    def probe(self, kind: str = "readinessProbe") -> bool:
        """The pod spec's probe command, run in the container's namespaces (as the kubelet
        would); False while the script has not exec'd the server yet."""
        assert self.process is not None
        command = self.container[kind]["exec"]["command"]
        pid = str(self.process.pid)
        done = subprocess.run(
            ["nsenter", "-t", pid, "-n", "-u", "-m", *command], env=self.env, capture_output=True, timeout=10
        )
        return done.returncode == 0

    def client(self, port: int, password: str) -> redis.Redis:
        """A client from the root namespace, by address (this process has no hosts file)."""
        return redis.Redis(host=self.address, port=port, password=password, socket_timeout=5, decode_responses=True)


class Cluster:
    """The rendered chart, its pods on their hosts, the worker and the manager."""

    def __init__(self, tmp: Path) -> None:
        objects = render(example("sentinel.yaml"))
        (secret,) = by_kind(objects, "Secret").values()
        self.password = base64.b64decode(secret["data"]["redis-password"]).decode()
        chart: dict[str, Any] = {
            "tmp": tmp,
            "config_maps": by_kind(objects, "ConfigMap"),
            "secrets": {
                (secret["metadata"]["name"], k): base64.b64decode(v).decode() for k, v in secret["data"].items()
            },
        }
        sets = by_kind(objects, "StatefulSet")
        redis_set, sentinel_set = sets["demo-wq-redis-redis"], sets["demo-wq-redis-sentinel"]
        self.network = network_or_skip(self._plan(redis_set, sentinel_set))
        try:
            self._lay_out(tmp, objects, chart, redis_set, sentinel_set)
        except BaseException:
            self.network.close()  # the fixture's teardown has not begun yet
            raise

    def _lay_out(
        self,
        tmp: Path,
        objects: list[dict[str, Any]],
        chart: dict[str, Any],
        redis_set: dict[str, Any],
        sentinel_set: dict[str, Any],
    ) -> None:
        """The pods' directories and hosts files, and the worker's spec."""
        self.redis = [Pod(self.network, redis_set, i, 11 + i, **chart) for i in range(redis_set["spec"]["replicas"])]
        self.sentinels = [
            Pod(self.network, sentinel_set, i, 21 + i, **chart) for i in range(sentinel_set["spec"]["replicas"])
        ]
        self.sentinel_port = sentinel_set["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        self.redis_port = redis_set["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        names = {pod.address: [pod.fqdn, pod.name] for pod in [*self.redis, *self.sentinels]}
        names[self.network.address(31)] = [WORKER_HOST]
        names[self.network.address(41)] = [MANAGER_HOST]
        self.network.write_hosts(names)
        self.worker = container(worker_pools(objects)["cpu"])
        self.worker_env = expanded(self.worker, chart["secrets"])
        self.tmp = tmp

    @staticmethod
    def _plan(redis_set: dict[str, Any], sentinel_set: dict[str, Any]) -> Any:
        def plan(network: Network) -> None:
            for i in range(redis_set["spec"]["replicas"]):
                network.add_host(f"demo-wq-redis-redis-{i}", 11 + i)
            for i in range(sentinel_set["spec"]["replicas"]):
                network.add_host(f"demo-wq-redis-sentinel-{i}", 21 + i)
            network.add_host(WORKER_HOST, 31)
            network.add_host(MANAGER_HOST, 41)
            network.add_root(ROOT_OCTET)

        return plan

    def redis_client(self, pod: Pod) -> redis.Redis:
        return pod.client(self.redis_port, self.password)

    def sentinel_client(self, pod: Pod) -> redis.Redis:
        return pod.client(self.sentinel_port, self.password)

    def replication(self, pod: Pod) -> dict[str, Any]:
        try:
            return dict(self.redis_client(pod).info("replication"))
        except redis.RedisError:
            return {}

    def replicates(self, pod: Pod, master: Pod) -> bool:
        """``pod`` is a replica of ``master``, its link up (synced)."""
        info = self.replication(pod)
        return info.get("master_host") == master.fqdn and info.get("master_link_status") == "up"

    def master_seen(self, sentinel: Pod) -> tuple[str, int] | None:
        try:
            found: Any = self.sentinel_client(sentinel).sentinel_get_master_addr_by_name("wq")
        except redis.RedisError:
            return None
        return (str(found[0]), int(found[1])) if found else None

    def start_worker(self) -> subprocess.Popen[bytes]:
        args = list(self.worker["args"])
        args[args.index("--workdir") + 1] = str(self.tmp / "sandboxes")  # the image's /work/sandboxes
        env = {
            **os.environ,
            **self.worker_env,
            "HOME": str(self.tmp),  # the image's /home/wq
            "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("WQ_REDIS_URL_FILE", None)
        with open(self.tmp / "worker.log", "wb") as log:
            command = [sys.executable, "-m", "wq_redis", *args]
            return self.network.spawn(WORKER_HOST, command, env, stdout=log.fileno(), stderr=log.fileno())

    def start_manager(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "WQ_REDIS_URL": self.worker_env["WQ_REDIS_URL"],  # the URL the chart gives its clients
            "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        }
        queue = self.worker["args"][self.worker["args"].index("--queue") + 1]
        script = os.path.join(ROOT, "tests", "chart_live_manager.py")
        return self.network.spawn(
            MANAGER_HOST, [sys.executable, script, queue], env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )


def run_tasks(manager: subprocess.Popen[bytes], count: int, timeout: float = 45) -> list[dict[str, Any]]:
    assert manager.stdin is not None and manager.stdout is not None
    manager.stdin.write(f"{count}\n".encode())
    manager.stdin.flush()
    ready, _, _ = select.select([manager.stdout], [], [], timeout)
    assert ready, f"the manager returned no tasks in {timeout} s"
    return list(json.loads(manager.stdout.readline()))


def check_tasks(done: list[dict[str, Any]], count: int) -> None:
    assert len(done) == count, done
    for task in done:
        assert task["result"] == wq.WORK_QUEUE_RESULT_SUCCESS and task["exit"] == 0, task
        # the worker pod ran it: the task saw the pod's host name, and so does the manager
        assert task["host"] == WORKER_HOST and task["output"].strip() == WORKER_HOST, task


def kill(pod: Pod) -> None:
    """SIGKILL the pod's server (its pid: the script exec'd it), as a crash would."""
    assert pod.process is not None
    pod.process.send_signal(signal.SIGKILL)
    pod.process.wait(5)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    _require_servers()
    built = Cluster(tmp_path)
    try:
        yield built
    finally:
        built.network.close()


def test_the_charts_scripts_start_sentinels_fail_over_and_rejoin_a_restarted_primary(cluster: Cluster) -> None:
    began = time.monotonic()
    primary, *replicas = cluster.redis
    # the StatefulSet starts its pods in order, each once the previous one is ready
    for pod in cluster.redis:
        pod.start()
        assert wait_until(pod.probe, 15), f"{pod.name} never became ready: {pod.file('run', 'redis.conf')}"
    # on a first install nobody names a primary: every pod's script falls back to pod 0
    assert "replicaof" not in primary.file("run", "redis.conf")
    for pod in replicas:
        assert f"replicaof {primary.fqdn} 6379\n" in pod.file("run", "redis.conf")
    for pod in replicas:
        assert wait_until(partial(cluster.replicates, pod, primary), 15), cluster.replication(pod)
    assert wait_until(lambda: cluster.replication(primary).get("connected_slaves") == len(replicas), 10)

    for pod in cluster.sentinels:  # podManagementPolicy: Parallel
        pod.start()
    assert wait_until(lambda: all(p.probe() for p in cluster.sentinels), 15)
    for pod in cluster.sentinels:
        assert f"sentinel monitor wq {primary.fqdn} 6379 2\n" in pod.file("run", "sentinel.conf")

    def sentinels_see(master: Pod, others: list[Pod]) -> bool:
        for sentinel in cluster.sentinels:
            if cluster.master_seen(sentinel) != (master.fqdn, cluster.redis_port):
                return False
            client = cluster.sentinel_client(sentinel)
            replicas_seen: Any = client.sentinel_slaves("wq")
            sentinels_seen: Any = client.sentinel_sentinels("wq")
            seen_replicas = {r["ip"] for r in replicas_seen if "s_down" not in r["flags"]}
            seen_sentinels = sorted(s["ip"] for s in sentinels_seen)
            if seen_replicas != {p.fqdn for p in others}:
                return False
            # each other sentinel once (a restarted one is not also counted under its old ID)
            if seen_sentinels != sorted(s.fqdn for s in cluster.sentinels if s is not sentinel):
                return False
        return True

    # the sentinels agree on the primary and know the replicas and each other, by DNS name
    assert wait_until(lambda: sentinels_see(primary, replicas), 15)
    started = time.monotonic()

    worker = cluster.start_worker()
    manager = cluster.start_manager()
    check_tasks(run_tasks(manager, 4), 4)

    # the primary's Redis dies; the sentinels promote a replica, the tasks go on
    kill(primary)
    killed = time.monotonic()
    check_tasks(run_tasks(manager, 4), 4)
    promoted = next(
        (r for r in replicas if all(cluster.master_seen(s) == (r.fqdn, cluster.redis_port) for s in cluster.sentinels)),
        None,
    )
    assert promoted is not None, [cluster.master_seen(s) for s in cluster.sentinels]
    assert cluster.replication(promoted)["role"] == "master"
    failed_over = time.monotonic()

    # Kubernetes restarts the container: its script must find the new primary (asking the
    # sentinels) and start as its replica, not as a second primary on its old data
    primary.start()
    assert wait_until(primary.probe, 15), primary.file("run", "redis.conf")
    assert f"replicaof {promoted.fqdn} 6379\n" in primary.file("run", "redis.conf")
    assert wait_until(partial(cluster.replicates, primary, promoted), 15), cluster.replication(primary)
    others = [primary, *(r for r in replicas if r is not promoted)]
    assert wait_until(lambda: sentinels_see(promoted, others), 15)
    check_tasks(run_tasks(manager, 4), 4)
    assert manager.stdin is not None
    manager.stdin.close()
    assert manager.wait(15) == 0
    worker.send_signal(signal.SIGTERM)  # the pod deleted: the worker drains and exits
    assert worker.wait(15) == 0
    rejoined = time.monotonic()

    # a sentinel restarted after the failover watches the new primary (the others name it)
    sentinel = cluster.sentinels[0]
    kill(sentinel)
    sentinel.start()
    assert wait_until(sentinel.probe, 15)
    assert f"sentinel monitor wq {promoted.fqdn} 6379 2\n" in sentinel.file("run", "sentinel.conf")
    assert wait_until(lambda: sentinels_see(promoted, others), 15)

    # no sentinel answers: a restarted replica's script finds the primary by asking the
    # Redis pods for their role (and does not fall back to pod 0, now a replica)
    for sentinel in cluster.sentinels:
        kill(sentinel)
    (last,) = (r for r in replicas if r is not promoted)
    kill(last)
    last.start()
    assert wait_until(last.probe, 15)
    assert f"replicaof {promoted.fqdn} 6379\n" in last.file("run", "redis.conf")
    assert cluster.replication(last)["master_host"] == promoted.fqdn
    print(
        f"\nchart live: servers up and agreed in {started - began:.1f} s, 4 tasks + kill + 4 tasks through the "
        f"failover in {failed_over - started:.1f} s ({failed_over - killed:.1f} s from the kill), restart rejoined "
        f"and 4 more tasks in {rejoined - failed_over:.1f} s, sentinel restart and replica restart without "
        f"sentinels in {time.monotonic() - rejoined:.1f} s"
    )
