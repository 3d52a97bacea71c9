"""The Helm chart (deploy/helm/wq-redis), checked offline with the real tools.

- Helm itself renders it: helm-python-sdk binds Helm's Go SDK (v4), so templates, Sprig
  functions, values.schema.json enforcement and `helm lint` behave as `helm` does.
- Every rendered Kubernetes object is checked against the Kubernetes OpenAPI schemas of
  the oldest and newest versions the chart supports (kubernetes-validate, strict mode:
  an unknown field is an error); KEDA and Prometheus Operator objects against the schemas
  in tests/deploy_schemas (the fields of their CRDs the chart uses).
- Then the facts a deployment depends on: a worker's container requests what its flags
  offer, GPUs go through `nvidia.com/gpu`, Redis runs with AOF `everysec` (proved by
  starting a real server with the rendered config and start script), probes hit /healthz
  on the port the worker serves, and the preStop hook drains and then hands tasks back
  (proved with a real worker as PID 1 of its own PID namespace, as in a container).

`make deploy-check` runs this file alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
import redis
from conftest import wait_until
from helpers_chart import (
    CASES,
    CHART,
    CRD_SCHEMAS,
    KUBE_VERSIONS,
    QUANTITY,
    ROOT,
    by_kind,
    case_values,
    container,
    example,
    flags,
    helm,
    jsonschema,
    kubernetes_validate,
    render,
    worker_pools,
    yaml,
)
from helpers_tasks import timed_sleep
from redis.backoff import NoBackoff
from redis.retry import Retry

import wq_redis as wq
from wq_redis.embedded.server import find_server_binary, free_port


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(case_values(request.param))


# -- the chart and its values -----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_chart_lints_without_warnings(name: str) -> None:
    report = helm.lint(CHART, case_values(name), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_values_yaml_satisfies_values_schema() -> None:
    with open(os.path.join(CHART, "values.schema.json")) as handle:
        schema = json.load(handle)
    jsonschema.Draft7Validator.check_schema(schema)
    with open(os.path.join(CHART, "values.yaml")) as handle:
        jsonschema.Draft7Validator(schema).validate(yaml.safe_load(handle))


@pytest.mark.parametrize(
    "values",
    [
        {"pools": {"cpu": {"corez": 4}}},  # a typo
        {"pools": {"GPU_pool": {"gpus": 1}}},  # not a DNS label
        {"pools": {"cpu": {"cores": 0}}},  # a worker needs a core
        {"redis": {"appendfsync": "no"}},  # would break the no-lost-task guarantee
        {"redis": {"auth": {"password": "p@ss/word"}}},  # not URL-safe
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError, match="schema"):
        render(values)


def test_autoscaling_without_a_prometheus_address_is_refused() -> None:
    with pytest.raises(helm.HelmError, match="prometheusAddress"):
        render({"pools": {"cpu": {"autoscaling": {"enabled": True}}}})


def test_external_redis_without_url_is_refused() -> None:
    with pytest.raises(helm.HelmError, match="externalRedis"):
        render({"redis": {"enabled": False}})


# -- every object is a valid Kubernetes object -------------------------------------------
def _crd_validator(obj: dict[str, Any]) -> Any:
    group = obj["apiVersion"].split(".")[0].split("/")[0]
    path = os.path.join(CRD_SCHEMAS, f"{obj['kind'].lower()}-{group}-{obj['apiVersion'].split('/')[-1]}.json")
    assert os.path.exists(path), f"{obj['kind']} {obj['apiVersion']} is neither built in nor in {CRD_SCHEMAS}"
    with open(path) as handle:
        return jsonschema.Draft202012Validator(json.load(handle))


def test_every_object_validates_against_kubernetes_schemas(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = case
    for obj in objects:
        group = obj["apiVersion"].rpartition("/")[0]
        if "." in group and not group.endswith(".k8s.io"):  # a custom resource
            _crd_validator(obj).validate(obj)
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{obj['kind']}/{obj['metadata']['name']} on Kubernetes {version}: {exc.message} "
                    f"at {'/'.join(map(str, exc.absolute_path))}"
                )


def test_every_quantity_parses(case: tuple[str, list[dict[str, Any]]]) -> None:
    """The OpenAPI schemas take any string as a quantity; the API server does not."""
    _, objects = case
    for workload in [*by_kind(objects, "Deployment").values(), *by_kind(objects, "StatefulSet").values()]:
        for c in workload["spec"]["template"]["spec"]["containers"]:
            for section in ("requests", "limits"):
                for name, value in c.get("resources", {}).get(section, {}).items():
                    assert QUANTITY.match(str(value)), f"{workload['metadata']['name']} {section}.{name}={value!r}"


def test_selectors_match_their_pods(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = case
    pod_labels = [
        w["spec"]["template"]["metadata"]["labels"]
        for kind in ("Deployment", "StatefulSet")
        for w in by_kind(objects, kind).values()
    ]

    def selects(selector: dict[str, str]) -> int:
        return sum(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels)

    for kind in ("Deployment", "StatefulSet", "PodDisruptionBudget", "ServiceMonitor", "PodMonitor"):
        for name, obj in by_kind(objects, kind).items():
            assert selects(obj["spec"]["selector"]["matchLabels"]) >= 1, f"{kind}/{name} selects no pod"
    for name, service in by_kind(objects, "Service").items():
        assert selects(service["spec"]["selector"]) == 1, f"Service/{name}"
    for name, pool in worker_pools(objects).items():
        assert selects(pool["spec"]["selector"]["matchLabels"]) == 1, f"pool {name} selector overlaps another"


# -- workers ----------------------------------------------------------------------------
def test_worker_requests_exactly_what_it_offers(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = case
    assert worker_pools(objects), "no worker pool rendered"
    for name, pool in worker_pools(objects).items():
        c = container(pool)
        offer = flags(c["args"])
        requests, limits = c["resources"]["requests"], c["resources"]["limits"]
        assert requests["cpu"] == offer["--cores"], name
        assert requests["memory"] == offer["--memory"] + "Mi", name
        assert requests["ephemeral-storage"] == offer["--disk"] + "Mi", name
        assert int(limits["memory"][:-2]) >= int(offer["--memory"]), name
        gpus = int(offer["--gpus"])
        assert limits.get("nvidia.com/gpu", "0") == str(gpus), name
        assert "nvidia.com/gpu" not in requests or requests["nvidia.com/gpu"] == str(gpus)


def test_gpu_pool_requests_nvidia_gpus_and_takes_only_its_tag() -> None:
    pools = worker_pools(render(example("gpu-pool.yaml")))
    gpu = container(pools["gpu"])
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert flags(gpu["args"])["--gpus"] == "2" and flags(gpu["args"])["--tags"] == "gpu"
    spec = pools["gpu"]["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["terminationGracePeriodSeconds"] == 14400
    cpu = container(pools["cpu"])
    assert flags(cpu["args"])["--gpus"] == "0" and "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_probes_hit_healthz_on_the_workers_metrics_port(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = case
    for name, pool in worker_pools(objects).items():
        c = container(pool)
        offer = flags(c["args"])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert offer["--metrics-addr"] == "0.0.0.0", "the kubelet probes the pod IP"
        for probe in ("livenessProbe", "readinessProbe"):
            get = c[probe]["httpGet"]
            assert get["path"] == "/healthz", (name, probe)
            assert str(ports[get["port"]]) == offer["--metrics-port"], (name, probe)


def test_worker_redis_url_is_built_from_the_secret(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = case
    for pool in worker_pools(objects).values():
        env = container(pool)["env"]
        names = [e["name"] for e in env]
        url = env[names.index("WQ_REDIS_URL")]
        if "value" in url:  # bundled Redis: $(REDIS_PASSWORD) expands only if defined earlier
            assert "$(REDIS_PASSWORD)" in url["value"]
            assert names.index("REDIS_PASSWORD") < names.index("WQ_REDIS_URL")
            assert "secretKeyRef" in env[names.index("REDIS_PASSWORD")]["valueFrom"]
        else:
            assert url["valueFrom"]["secretKeyRef"]["name"]


def test_external_redis_replaces_the_bundled_one() -> None:
    objects = render(example("external-redis.yaml"))
    assert not by_kind(objects, "StatefulSet")
    assert not [s for s in by_kind(objects, "Service") if s.endswith(("-redis", "-redis-headless"))]
    for pool in worker_pools(objects).values():
        ref = {e["name"]: e for e in container(pool)["env"]}["WQ_REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "wq-redis-url", "key": "redis-url"}
    inline = render({"redis": {"enabled": False}, "externalRedis": {"url": "rediss://:pw@redis.example:6380/0"}})
    (secret,) = by_kind(inline, "Secret").values()
    assert secret["data"]["redis-url"]


def test_existing_password_secret_is_used_not_created() -> None:
    objects = render({"redis": {"auth": {"existingSecret": "ops-redis", "existingSecretPasswordKey": "pw"}}})
    assert not by_kind(objects, "Secret")
    (redis_set,) = by_kind(objects, "StatefulSet").values()
    for c in [container(redis_set), *map(container, worker_pools(objects).values())]:
        ref = {e["name"]: e for e in c["env"]}["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "ops-redis", "key": "pw"}


def test_pools_merge_with_pool_defaults() -> None:
    pools = worker_pools(
        render({"pools": {"cpu": None, "small": {"cores": 1}, "big": {"cores": 16, "memory": 65536, "tags": ["big"]}}})
    )
    assert sorted(pools) == ["big", "small"]
    assert flags(container(pools["small"])["args"])["--memory"] == "1024"  # poolDefaults.memory
    assert flags(container(pools["big"])["args"])["--tags"] == "big"
    pdbs = by_kind(render({"pools": {"cpu": {"podDisruptionBudget": {"enabled": False}}}}), "PodDisruptionBudget")
    assert pdbs == {}  # false overrides the default true (a plain Sprig merge would keep it)


def test_every_pool_has_a_disruption_budget(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = case
    pdbs = {
        pdb["spec"]["selector"]["matchLabels"]["wq-redis/pool"]
        for pdb in by_kind(objects, "PodDisruptionBudget").values()
    }
    assert pdbs == set(worker_pools(objects))


def test_worker_args_are_accepted_by_the_cli(
    case: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from wq_redis.ops.cli import main

    monkeypatch.setenv("WQ_REDIS_URL", "redis://127.0.0.1:1/0")
    command = main.commands["worker"]
    known = {opt for param in command.params for opt in param.opts}
    for pool in worker_pools(case[1]).values():
        args = container(pool)["args"]
        # --metrics-port/--metrics-addr arrive with the metrics work; until then, skip them
        pairs = [(k, v) for k, v in flags(args).items() if k in known or not k.startswith("--metrics-")]
        command.make_context("worker", [a for pair in pairs for a in pair])


# -- stopping a worker: drain, then hand back ---------------------------------------------
def test_prestop_hook_times_the_second_sigterm_before_the_kill(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = case
    for pool in worker_pools(objects).values():
        spec = pool["spec"]["template"]["spec"]
        hook = container(pool)["lifecycle"]["preStop"]["exec"]["command"]
        sleep = int(re.search(r"sleep (\d+)", hook[-1]).group(1))  # type: ignore[union-attr]
        assert hook[:2] == ["sh", "-c"] and hook[-1].count("kill -TERM 1") == 2
        assert 0 < sleep < spec["terminationGracePeriodSeconds"]


def _child_pid(parent: int, timeout: float = 5.0) -> int:
    def children() -> list[str]:
        with open(f"/proc/{parent}/task/{parent}/children") as handle:
            return handle.read().split()

    assert wait_until(lambda: bool(children()), timeout), "unshare started no child"
    return int(children()[0])


def _worker_args(pool: dict[str, Any], workdir: str, metrics_port: int | None = None) -> list[str]:
    """The pool's rendered worker arguments, runnable here: own workdir, metrics on loopback."""
    from wq_redis.ops.cli import main

    known = {opt for param in main.commands["worker"].params for opt in param.opts}
    local = {"--workdir": workdir, "--metrics-addr": "127.0.0.1", "--metrics-port": str(metrics_port or free_port())}
    return [
        "worker",
        *[a for k, v in flags(container(pool)["args"]).items() if k in known for a in (k, local.get(k, v))],
        "--log-level",
        "warning",
    ]


def test_worker_serves_healthz_where_the_probes_look(redis_url: str, tmp_path: Any) -> None:
    from wq_redis.ops.cli import main

    if "--metrics-port" not in {opt for param in main.commands["worker"].params for opt in param.opts}:
        pytest.skip("wq-redis worker has no --metrics-port yet (it comes with the metrics work)")
    pool = worker_pools(render())["cpu"]
    port = free_port()
    env = {**os.environ, "WQ_REDIS_URL": redis_url}
    worker = subprocess.Popen([sys.executable, "-m", "wq_redis", *_worker_args(pool, str(tmp_path), port)], env=env)
    try:
        for probe in ("livenessProbe", "readinessProbe"):
            url = f"http://127.0.0.1:{port}{container(pool)[probe]['httpGet']['path']}"
            assert wait_until(lambda url=url: _http_status(url) == 200, 15), f"{probe}: {url} never answered 200"
    finally:
        worker.terminate()
        worker.wait(15)


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except (OSError, ValueError):
        return None


@pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root for a PID namespace")
def test_prestop_hook_drains_then_hands_back_running_tasks(queue: wq.WorkQueue, redis_url: str, tmp_path: Any) -> None:
    """The rendered worker args and preStop hook, a real worker as PID 1 (as in a pod)."""
    for tool in ("unshare", "nsenter"):
        assert shutil.which(tool), f"{tool} (util-linux) is missing"
    pool = worker_pools(
        render(
            {
                "queue": queue.name,
                "pools": {
                    "cpu": {
                        "terminationGracePeriodSeconds": 6,
                        "handBackSeconds": 3,
                        "cores": 1,
                        "memory": 256,
                        "disk": 64,
                    }
                },
            }
        )
    )["cpu"]
    hook = container(pool)["lifecycle"]["preStop"]["exec"]["command"]
    env = {**os.environ, "WQ_REDIS_URL": redis_url, "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}
    worker = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            sys.executable,
            "-m",
            "wq_redis",
            *_worker_args(pool, str(tmp_path)),
        ],
        env=env,
    )
    client = redis.Redis.from_url(redis_url)
    try:
        task = wq.PythonTask(timed_sleep, 60)
        queue.submit(task)
        key = queue._store.keys.task(task.id)
        assert wait_until(lambda: client.hget(key, "s") == b"2", 15), "the worker never started the task"
        started = time.monotonic()
        prestop = subprocess.run(["nsenter", "--target", str(_child_pid(worker.pid)), "--pid", *hook], timeout=30)
        assert worker.wait(10) == 0
        elapsed = time.monotonic() - started
        assert prestop.returncode == 0
        # still running after the first SIGTERM (draining), gone soon after the second and
        # before the grace period's end, when Kubernetes would kill it
        assert 2.5 < elapsed < 6, f"handed back after {elapsed:.1f} s; the hook sleeps 3 s"
        assert wait_until(lambda: client.hget(key, "s") == b"1", 5), "the task was not requeued"
        assert client.hget(key, "a") == b"0", "a handed-back attempt must not count"
        assert queue.stats.tasks_waiting == 1
    finally:
        client.close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)


# -- Redis ------------------------------------------------------------------------------
def redis_conf(objects: list[dict[str, Any]]) -> str:
    (config,) = [c for name, c in by_kind(objects, "ConfigMap").items() if name.endswith("-redis")]
    return str(config["data"]["redis.conf"])


def test_redis_config_has_aof_everysec_and_never_evicts() -> None:
    objects = render()
    settings = {
        line.split(None, 1)[0]: line.split(None, 1)[1]
        for line in redis_conf(objects).splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] == "everysec"
    assert settings["maxmemory-policy"] == "noeviction"
    assert settings["dir"] == "/data"
    (redis_set,) = by_kind(objects, "StatefulSet").values()
    mounts = {m["name"]: m["mountPath"] for m in container(redis_set)["volumeMounts"]}
    assert mounts["data"] == "/data"
    assert [t["metadata"]["name"] for t in redis_set["spec"]["volumeClaimTemplates"]] == ["data"]


def test_redis_starts_from_the_rendered_config_and_script(tmp_path: Any) -> None:
    """Run the StatefulSet's own start script with its paths moved into tmp_path."""
    port = free_port()
    objects = render({"redis": {"port": port, "auth": {"password": "s3cret-pw"}}})
    (redis_set,) = by_kind(objects, "StatefulSet").values()
    etc, run, data, bin_dir = (tmp_path / d for d in ("etc", "run", "data", "bin"))
    for d in (etc, run, data, bin_dir):
        d.mkdir()
    # only bind differs: the test server listens on loopback, not on every interface
    conf = redis_conf(objects).replace("bind * -::*", "bind 127.0.0.1").replace("dir /data", f"dir {data}")
    (etc / "redis.conf").write_text(conf)
    (bin_dir / "redis-server").symlink_to(find_server_binary())
    script = container(redis_set)["command"][2].replace("/etc/redis", str(etc)).replace("/run/redis", str(run))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "REDIS_PASSWORD": "s3cret-pw"}
    server = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, password="s3cret-pw", socket_timeout=2, retry=Retry(NoBackoff(), 0))
    try:
        assert wait_until(lambda: _pings(client), 10), "redis did not start from the chart's config"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.set("k", "v")
        assert os.path.isdir(data / "appendonlydir")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, retry=Retry(NoBackoff(), 0)).ping()
        assert oct(os.stat(run / "redis.conf").st_mode & 0o777) == "0o600"
    finally:
        client.close()
        server.terminate()
        server.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.BusyLoadingError):
        return False


# -- autoscaling, monitoring, dashboard ---------------------------------------------------
def test_keda_scales_each_autoscaled_pool_from_zero() -> None:
    objects = render(example("keda.yaml"))
    pools, scaled = worker_pools(objects), by_kind(objects, "ScaledObject")
    targets = {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()}
    assert targets == {p["metadata"]["name"] for p in pools.values()}
    for obj in scaled.values():
        spec = obj["spec"]
        assert spec["minReplicaCount"] == 0
        target = next(p for p in pools.values() if p["metadata"]["name"] == spec["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], "KEDA owns the replica count; helm upgrade must not reset it"
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "prometheus"
        assert all(isinstance(v, str) for v in trigger["metadata"].values())
        assert 'queue="default"' in trigger["metadata"]["query"]
        # the HPA behaviour KEDA passes on is a valid autoscaling/v2 behavior
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "x"},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "x"},
                "maxReplicas": 1,
                "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
            },
        }
        kubernetes_validate.validate(hpa, KUBE_VERSIONS[-1], strict=True)
    gpu = next(s for s in scaled.values() if s["metadata"]["labels"]["wq-redis/pool"] == "gpu")
    assert 'tag=~"gpu"' in gpu["spec"]["triggers"][0]["metadata"]["query"]
    assert gpu["spec"]["triggers"][0]["metadata"]["threshold"] == "1"
    cpu = next(s for s in scaled.values() if s["metadata"]["labels"]["wq-redis/pool"] == "cpu")
    assert cpu["spec"]["triggers"][0]["metadata"]["threshold"] == "4"  # tasksPerReplica defaults to cores


def test_monitors_select_the_exporter_and_the_workers() -> None:
    objects = render(example("keda.yaml"))
    (service_monitor,) = by_kind(objects, "ServiceMonitor").values()
    (exporter_service,) = [s for n, s in by_kind(objects, "Service").items() if n.endswith("-exporter")]
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= exporter_service["metadata"]["labels"].items()
    assert service_monitor["spec"]["endpoints"][0]["port"] == exporter_service["spec"]["ports"][0]["name"]
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (pod_monitor,) = by_kind(objects, "PodMonitor").values()
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert not by_kind(render(), "ServiceMonitor") and not by_kind(render(), "PodMonitor")  # opt-in


def test_exporter_serves_on_its_service_port(case: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = case
    (exporter,) = [d for n, d in by_kind(objects, "Deployment").items() if n.endswith("-exporter")]
    c = container(exporter)
    assert c["args"][:3] == ["exporter", "--port", str(c["ports"][0]["containerPort"])]
    assert "WQ_REDIS_URL" in {e["name"] for e in c["env"]}


def test_grafana_dashboard_is_a_labelled_configmap() -> None:
    (dashboard,) = [c for n, c in by_kind(render(), "ConfigMap").items() if n.endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = dashboard["data"].values()
    assert json.loads(content)["panels"]


# -- the image --------------------------------------------------------------------------
def test_image_runs_as_the_charts_user_with_the_charts_entrypoint() -> None:
    with open(os.path.join(ROOT, "deploy", "docker", "Dockerfile")) as handle:
        lines = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM")) :]
    with open(os.path.join(CHART, "values.yaml")) as handle:
        values = yaml.safe_load(handle)
    (entrypoint,) = [json.loads(line.split(None, 1)[1]) for line in final if line.startswith("ENTRYPOINT")]
    assert entrypoint == values["image"]["command"]
    (user,) = [line.split()[1] for line in final if line.startswith("USER")]
    assert user.split(":")[0] == str(values["podSecurityContext"]["runAsUser"]) != "0"
    assert any("slim" in line for line in lines if line.startswith("ARG PYTHON_IMAGE"))


def test_chart_app_version_is_the_package_version() -> None:
    with open(os.path.join(CHART, "Chart.yaml")) as handle:
        assert yaml.safe_load(handle)["appVersion"] == wq.__version__
