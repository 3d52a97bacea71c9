"""The Helm chart's production Redis options, rendered by Helm's Go SDK (tests/helpers_chart.py)
and checked in what they render: Redis with replicas and sentinels, external Sentinel and
Cluster URLs, TLS secrets, durability.  Every object of the examples is also checked
against the Kubernetes schemas by tests/test_deploy.py (its cases are the example files).
tests/test_deploy_redis_live.py runs what the sentinel example renders for real: the Redis
and sentinel pods' start scripts (one network namespace per pod), tasks through the chart's
URL, a failover and restarted pods.  The TLS settings are checked here in the rendered text
only.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from helpers_chart import by_kind, container, example, expanded, helm, render, worker_pools

from wq_redis.protocol import sentinel

NS = "wq"  # helpers_chart.render's namespace
FULL = "demo-wq-redis"  # release "demo"


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


def redis_clients(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every container that talks to Redis as a client: the workers' and the exporter's."""
    clients = {name: container(pool) for name, pool in worker_pools(objects).items()}
    clients["exporter"] = container(by_kind(objects, "Deployment")[f"{FULL}-exporter"])
    return clients


def conf_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def pod_host(statefulset: dict[str, Any], index: int) -> str:
    """Pod ``index``'s DNS name as Kubernetes gives it: <set>-<i>.<serviceName>.<ns>.svc.cluster.local."""
    name, service = statefulset["metadata"]["name"], statefulset["spec"]["serviceName"]
    return f"{name}-{index}.{service}.{NS}.svc.cluster.local"


# -- Redis with replicas and sentinels ------------------------------------------------------
def test_sentinel_example_runs_replicas_sentinels_and_gives_clients_a_sentinel_url() -> None:
    objects = render(example("sentinel.yaml"))
    sets = by_kind(objects, "StatefulSet")
    redis_set, sentinel_set = sets[f"{FULL}-redis"], sets[f"{FULL}-sentinel"]
    assert redis_set["spec"]["replicas"] == 3  # the primary and redis.replicas: 2
    assert sentinel_set["spec"]["replicas"] == 3
    assert sentinel_set["spec"]["podManagementPolicy"] == "Parallel"
    services = by_kind(objects, "Service")
    # no Service that would spread writes over replicas; headless ones for pod DNS names
    assert f"{FULL}-redis" not in services
    assert services[redis_set["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    assert services[sentinel_set["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"

    sentinel_hosts = [(pod_host(sentinel_set, i), 26379) for i in range(3)]
    for name, c in redis_clients(objects).items():
        env = expanded(c, {(f"{FULL}-redis", "redis-password"): "pw"})
        url = env["WQ_REDIS_URL"]
        assert url.startswith("redis+sentinel://"), (name, url)
        parts = sentinel.parse(url)  # the package's own parser reads what the chart wrote
        assert parts["sentinels"] == sentinel_hosts, name
        assert parts["service"] == "wq"
        assert parts["master"]["password"] == "pw" and parts["master"]["db"] == 0
        assert parts["sentinel"] == {"password": "pw"}, name
    for pool in worker_pools(objects).values():
        assert env_of(container(pool))["WQ_DURABILITY"]["value"] == "replica"

    # each sentinel watches the primary with the values' quorum and timings
    script = container(sentinel_set)["command"][2]
    assert re.search(r"sentinel monitor wq %s %s 2\\n", script)
    for line in ("down-after-milliseconds wq 5000", "failover-timeout wq 60000", "parallel-syncs wq 1"):
        assert f"sentinel {line}" in script
    # ... first asking the other sentinels and Redis pods, else pod 0 (a first install)
    assert f'set -- "{pod_host(redis_set, 0)}" 6379' in script
    assert "sentinel get-master-addr-by-name wq" in script
    for i in range(3):
        assert pod_host(sentinel_set, i) in script and pod_host(redis_set, i) in script
    (sentinel_conf,) = by_kind(objects, "ConfigMap")[f"{FULL}-sentinel"]["data"].values()
    assert {"sentinel resolve-hostnames yes", "sentinel announce-hostnames yes", "port 26379"} <= set(
        conf_lines(sentinel_conf)
    )
    # each Redis pod announces its DNS name and replicates whom the sentinels name
    redis_script = container(redis_set)["command"][2]
    assert "replica-announce-ip" in redis_script and "masterauth" in redis_script
    assert "replicaof" in redis_script and "find_master" in redis_script
    redis_conf = conf_lines(by_kind(objects, "ConfigMap")[f"{FULL}-redis"]["data"]["redis.conf"])
    assert {"min-replicas-to-write 1", "appendonly yes", "maxmemory-policy noeviction"} <= set(redis_conf)
    for workload in (redis_set, sentinel_set):  # pods spread over nodes unless told otherwise
        term = workload["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        (preferred,) = term["preferredDuringSchedulingIgnoredDuringExecution"]
        labels = preferred["podAffinityTerm"]["labelSelector"]["matchLabels"]
        assert labels.items() <= workload["spec"]["template"]["metadata"]["labels"].items()


def test_replicas_without_sentinels_point_clients_at_pod_zero() -> None:
    objects = render({"redis": {"replicas": 1}})
    (redis_set,) = by_kind(objects, "StatefulSet").values()
    assert redis_set["spec"]["replicas"] == 2
    assert f"{FULL}-sentinel" not in by_kind(objects, "StatefulSet")
    for c in redis_clients(objects).values():
        url = expanded(c, {(f"{FULL}-redis", "redis-password"): "pw"})["WQ_REDIS_URL"]
        assert url == f"redis://:pw@{pod_host(redis_set, 0)}:6379/0"
    assert "find_master" not in container(redis_set)["command"][2]


def test_single_redis_is_unchanged_by_default() -> None:
    objects = render()
    (redis_set,) = by_kind(objects, "StatefulSet").values()
    assert redis_set["spec"]["replicas"] == 1
    assert "replicaof" not in container(redis_set)["command"][2]
    assert "affinity" not in redis_set["spec"]["template"]["spec"]
    for c in redis_clients(objects).values():
        env = expanded(c, {(f"{FULL}-redis", "redis-password"): "pw"})
        assert env["WQ_REDIS_URL"] == f"redis://:pw@{FULL}-redis:6379/0"
        assert not {"WQ_TLS_CA_CERT", "WQ_TLS_CERT", "WQ_TLS_KEY"} & set(env)
    for pool in worker_pools(objects).values():
        assert env_of(container(pool))["WQ_DURABILITY"]["value"] == "none"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis": {"sentinel": {"enabled": True}}}, "needs redis.replicas >= 1"),
        ({"workers": {"durability": "replica"}}, "durability replica needs redis.replicas"),
        ({"redis": {"replicas": 1, "minReplicasToWrite": 2}}, "minReplicasToWrite is above"),
        ({"redis": {"replicas": 1, "sentinel": {"enabled": True, "replicas": 1, "quorum": 2}}}, "quorum is above"),
    ],
)
def test_settings_that_cannot_work_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


@pytest.mark.parametrize(
    "values",
    [
        {"workers": {"durability": "always"}},  # not a level
        {"redis": {"sentinel": {"masterSet": "my master"}}},  # a space would split the sentinel.conf line
        {"redis": {"sentinel": {"quorm": 2}}},  # a typo
        {"redis": {"enabled": False}, "externalRedis": {"url": "http://redis.example:6379"}},
        {"tls": {"existingSecret": "s", "mountPath": "relative/path"}},
    ],
)
def test_schema_rejects_bad_production_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError, match="schema"):
        render(values)


# -- external Sentinel and Cluster URLs -------------------------------------------------------
def _external(url: str, **extra: Any) -> list[dict[str, Any]]:
    return render({"redis": {"enabled": False}, "externalRedis": {"url": url, **extra}})


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:pw@s1.example:26379,s2.example:26379,s3.example/mymaster/0",
        "rediss+sentinel://:pw@s1.example:26379/mymaster/2?ssl_cert_reqs=required",
        "redis+cluster://:pw@node1.example:6379,node2.example:6379",
        "rediss+cluster://:pw@node1.example:6379",
    ],
)
def test_external_sentinel_and_cluster_urls_reach_every_client(url: str) -> None:
    objects = _external(url)
    assert not by_kind(objects, "StatefulSet")
    (secret,) = by_kind(objects, "Secret").values()
    assert base64.b64decode(secret["data"]["redis-url"]).decode() == url
    for name, c in redis_clients(objects).items():
        assert expanded(c, {(secret["metadata"]["name"], "redis-url"): url})["WQ_REDIS_URL"] == url, name


@pytest.mark.parametrize(
    ("url", "separator"),
    [
        ("redis+sentinel://:pw@s1.example:26379,s2.example:26379/mymaster/0", "?"),
        ("redis+sentinel://:pw@s1.example:26379/mymaster/0?socket_timeout=5", "&"),
    ],
)
def test_external_sentinel_password_comes_from_its_secret(url: str, separator: str) -> None:
    objects = _external(url, sentinelPassword={"existingSecret": "ops-sentinel", "existingSecretKey": "pw"})
    (secret,) = by_kind(objects, "Secret").values()
    secrets = {(secret["metadata"]["name"], "redis-url"): url, ("ops-sentinel", "pw"): "s3ntinel"}
    for name, c in redis_clients(objects).items():
        env = env_of(c)
        assert "s3ntinel" not in str(env) and "value" not in env["WQ_SENTINEL_PASSWORD"], name
        final = expanded(c, secrets)["WQ_REDIS_URL"]
        assert final == f"{url}{separator}sentinel_password=s3ntinel"
        parts = sentinel.parse(final)
        assert parts["sentinel"] == {"password": "s3ntinel"}
        assert parts["master"]["password"] == "pw"


def test_sentinel_password_with_a_url_in_an_existing_secret() -> None:
    objects = render(
        {
            "redis": {"enabled": False},
            "externalRedis": {"existingSecret": "ops-url", "sentinelPassword": {"existingSecret": "ops-sentinel"}},
        }
    )
    assert not by_kind(objects, "Secret")
    for c in redis_clients(objects).values():
        env = expanded(
            c, {("ops-url", "redis-url"): "redis+sentinel://h:26379/m", ("ops-sentinel", "sentinel-password"): "x"}
        )
        assert env["WQ_REDIS_URL"] == "redis+sentinel://h:26379/m?sentinel_password=x"


def test_sentinel_password_on_a_url_that_is_not_sentinels_is_refused() -> None:
    with pytest.raises(helm.HelmError, match="sentinelPassword needs a redis\\+sentinel"):
        _external("redis+cluster://node1:6379", sentinelPassword={"existingSecret": "ops-sentinel"})


# -- TLS ------------------------------------------------------------------------------------
def _tls_mounts(workload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    spec = workload["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
    (mount,) = [m for m in container(workload)["volumeMounts"] if m["name"] == "tls"]
    assert mount["readOnly"] is True
    return volume["secret"], mount["mountPath"]


def test_tls_secret_is_mounted_into_clients_and_named_by_their_environment() -> None:
    objects = render(example("tls.yaml"))
    workloads = {n: d for n, d in by_kind(objects, "Deployment").items()}
    assert len(workloads) == 2  # the cpu pool and the exporter
    for name, workload in workloads.items():
        secret, path = _tls_mounts(workload)
        assert secret == {"secretName": "wq-redis-tls", "defaultMode": 0o440}, name
        env = expanded(container(workload), {(f"{FULL}-redis", "redis-password"): "pw"})
        assert env["WQ_TLS_CA_CERT"] == f"{path}/ca.crt"
        assert env["WQ_TLS_CERT"] == f"{path}/tls.crt"
        assert env["WQ_TLS_KEY"] == f"{path}/tls.key"
        assert env["WQ_REDIS_URL"].startswith("rediss://"), name
    # the bundled Redis serves TLS only, with the Secret's files, and requires client certificates
    (redis_set,) = by_kind(objects, "StatefulSet").values()
    secret, path = _tls_mounts(redis_set)
    assert secret["secretName"] == "wq-redis-tls"
    conf = set(conf_lines(by_kind(objects, "ConfigMap")[f"{FULL}-redis"]["data"]["redis.conf"]))
    assert {"port 0", "tls-port 6379", "tls-auth-clients yes", "tls-replication yes"} <= conf
    assert {f"tls-cert-file {path}/tls.crt", f"tls-key-file {path}/tls.key", f"tls-ca-cert-file {path}/ca.crt"} <= conf
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container(redis_set)[probe]["exec"]["command"][2]
        assert f"--tls --cacert {path}/ca.crt --cert {path}/tls.crt --key {path}/tls.key" in command


def test_tls_without_client_certificates_gives_the_ca_alone() -> None:
    objects = render({"tls": {"existingSecret": "wq-redis-tls", "authClients": False, "mountPath": "/certs"}})
    for c in redis_clients(objects).values():
        env = env_of(c)
        assert env["WQ_TLS_CA_CERT"]["value"] == "/certs/ca.crt"
        assert "WQ_TLS_CERT" not in env and "WQ_TLS_KEY" not in env
    conf = by_kind(objects, "ConfigMap")[f"{FULL}-redis"]["data"]["redis.conf"]
    assert "tls-auth-clients no" in conf_lines(conf)


def test_tls_with_sentinels_serves_tls_on_the_sentinels_too() -> None:
    objects = render({**example("sentinel.yaml"), "tls": {"existingSecret": "wq-redis-tls"}})
    sentinel_set = by_kind(objects, "StatefulSet")[f"{FULL}-sentinel"]
    assert _tls_mounts(sentinel_set)[0]["secretName"] == "wq-redis-tls"
    (sentinel_conf,) = by_kind(objects, "ConfigMap")[f"{FULL}-sentinel"]["data"].values()
    assert {"port 0", "tls-port 26379", "tls-replication yes"} <= set(conf_lines(sentinel_conf))
    assert "redis-cli --tls" in container(sentinel_set)["command"][2]  # finding the primary
    for c in redis_clients(objects).values():
        url = expanded(c, {(f"{FULL}-redis", "redis-password"): "pw"})["WQ_REDIS_URL"]
        parts = sentinel.parse(url)
        assert parts["master"]["ssl"] is True and parts["sentinel"]["ssl"] is True


def test_tls_with_an_external_redis_mounts_the_files_and_keeps_the_url() -> None:
    url = "rediss://:pw@redis.example:6380/0"
    objects = render({"redis": {"enabled": False}, "externalRedis": {"url": url}, "tls": {"existingSecret": "ca"}})
    assert not by_kind(objects, "StatefulSet")
    for c in redis_clients(objects).values():
        env = env_of(c)
        assert env["WQ_TLS_CA_CERT"]["value"] == "/etc/wq-redis/tls/ca.crt"
        assert "valueFrom" in env["WQ_REDIS_URL"]
