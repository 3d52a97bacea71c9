"""Worker metrics, the queue exporter, service discovery, rules and the dashboard model.

GPUs are tested through an injected stand-in for NVML (this machine has none); the
exposition of every registry is checked with `promtool check metrics`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import redis
from conftest import drain, wait_until
from fake_gpus import BOARDS, FakeGpus
from monitoring_helpers import (
    REPO,
    Exporter,
    family_names,
    http_get,
    names,
    promtool_check_metrics,
    require_tool,
    samples,
    value,
)

import wq_redis as wq
from wq_redis.ops.exporter import QueueExporter
from wq_redis.protocol.resources import Request
from wq_redis.protocol.store import find_queues
from wq_redis.worker.metrics import NvmlProvider, TaskCpuMeter, WorkerMetrics, match_gpus
from wq_redis.worker.ports import advertised_address, parse_port_range
from wq_redis.worker.resources import GPU, Allocator, Capacity

pytestmark = pytest.mark.monitoring
GiB = 1024**3


# -- a stand-in for the pynvml module ----------------------------------------------------
class NVMLError(Exception):
    pass


def fake_nvml(boards: list[dict], init_error: str | None = None, broken: set[int] = frozenset()) -> SimpleNamespace:
    calls = {"init": 0, "shutdown": 0}

    def init() -> None:
        calls["init"] += 1
        if init_error:
            raise NVMLError(init_error)

    def check(handle: int) -> dict:
        if handle in broken:
            raise NVMLError("GPU is lost")
        return boards[handle]

    return SimpleNamespace(
        calls=calls,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1),
        nvmlDeviceGetCount=lambda: len(boards),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: check(h)["uuid"].encode(),
        nvmlDeviceGetName=lambda h: check(h)["name"],
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=check(h)["util"], memory=0),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(
            used=check(h)["used"], total=check(h)["total"], free=check(h)["total"] - check(h)["used"]
        ),
    )


BOARD_SPECS = [
    {"uuid": "GPU-aaa", "name": "Tesla T4", "util": 87, "used": 2 * GiB, "total": 16 * GiB},
    {"uuid": "GPU-bbb", "name": "Tesla T4", "util": 0, "used": 0, "total": 16 * GiB},
]


def make_metrics(gpus: list[GPU] | None = None, provider=None, cores: int = 4, tags=("a", "b")) -> WorkerMetrics:
    capacity = Capacity(cores, 2048, 4096, gpus or [])
    return WorkerMetrics("w1@host", capacity, Allocator(capacity), list(tags), gpu_provider=provider or FakeGpus())


# -- GPUs ------------------------------------------------------------------------------------
def test_nvml_provider_reads_utilization_and_memory_of_each_gpu():
    nvml = fake_nvml(BOARD_SPECS)
    provider = NvmlProvider(nvml)
    first, second = provider.sample()
    assert (first.index, first.uuid, first.model) == (0, "GPU-aaa", "Tesla T4")
    assert first.utilization == pytest.approx(0.87) and first.memory_used == 2 * GiB and first.memory_total == 16 * GiB
    assert second.utilization == 0.0
    provider.sample()
    provider.close()
    assert nvml.calls == {"init": 1, "shutdown": 1}  # initialised once, not per scrape


def test_nvml_failing_to_start_means_no_gpu_samples_and_is_not_retried():
    nvml = fake_nvml(BOARD_SPECS, init_error="Driver Not Loaded")
    provider = NvmlProvider(nvml)
    assert provider.sample() == [] and provider.sample() == []
    assert nvml.calls["init"] == 1
    provider.close()


def test_a_failing_board_hides_only_that_board():
    provider = NvmlProvider(fake_nvml(BOARD_SPECS, broken={0}))
    assert [s.uuid for s in provider.sample()] == ["GPU-bbb"]


def test_real_nvml_on_a_machine_without_a_driver_gives_nothing_and_never_raises():
    provider = NvmlProvider()  # the real pynvml: no NVIDIA driver on the test machines
    samples_now = provider.sample()
    provider.close()
    assert isinstance(samples_now, list)


def test_worker_without_gpus_exports_zero_gpus_and_no_gpu_series():
    parsed = samples(make_metrics(provider=NvmlProvider(fake_nvml([], init_error="no driver"))).exposition())
    assert value(parsed, "wq_worker_gpus") == 0
    assert not [n for n in names(parsed) if n.startswith("wq_gpu_")]


def test_declared_gpus_without_nvml_are_offered_but_have_no_gpu_series():
    gpus = [GPU(0, ""), GPU(1, "")]
    parsed = samples(make_metrics(gpus, NvmlProvider(fake_nvml([], init_error="Library Not Found"))).exposition())
    assert value(parsed, "wq_worker_gpus") == 2
    assert not [n for n in names(parsed) if n.startswith("wq_gpu_")]


def test_per_gpu_series_cover_the_workers_own_gpus_by_uuid():
    # the worker holds only board 1 of the host (CUDA_VISIBLE_DEVICES chose it)
    metrics = make_metrics([GPU(0, "GPU-bbb", "Tesla T4")], NvmlProvider(fake_nvml(BOARD_SPECS)))
    metrics.allocator.allocate("t1", Request(cores=1, gpus=1))
    parsed = samples(metrics.exposition())
    labels = {"gpu": "1", "uuid": "GPU-bbb", "model": "Tesla T4"}
    assert value(parsed, "wq_gpu_utilization_ratio", **labels) == 0.0
    assert value(parsed, "wq_gpu_memory_total_bytes", **labels) == 16 * GiB
    assert value(parsed, "wq_gpu_memory_used_bytes", **labels) == 0
    assert not [k for k in parsed if k[0].startswith("wq_gpu_") and dict(k[1])["uuid"] == "GPU-aaa"]
    assert value(parsed, "wq_worker_gpus") == 1 and value(parsed, "wq_worker_gpus_in_use") == 1


def test_gpus_known_by_index_match_samples_by_index():
    assert [s.uuid for s in match_gpus([GPU(1, "")], BOARDS)] == [BOARDS[1].uuid]


def test_a_raising_gpu_provider_does_not_break_the_scrape():
    class Broken:
        def sample(self):
            raise RuntimeError("boom")

        def close(self):
            pass

    parsed = samples(make_metrics([GPU(0, "")], Broken()).exposition())
    assert value(parsed, "wq_worker_cores") == 4 and value(parsed, "wq_worker_gpus") == 1


# -- tasks and resources -----------------------------------------------------------------------
def test_capacity_and_allocation_in_base_units():
    metrics = make_metrics()
    metrics.allocator.allocate("t1", Request(cores=3, memory=512, disk=1024))
    parsed = samples(metrics.exposition())
    assert value(parsed, "wq_worker_cores") == 4 and value(parsed, "wq_worker_cores_in_use") == 3
    assert value(parsed, "wq_worker_memory_bytes") == 2048 * 1024**2
    assert value(parsed, "wq_worker_memory_in_use_bytes") == 512 * 1024**2
    assert value(parsed, "wq_worker_disk_in_use_bytes") == 1024 * 1024**2
    assert value(parsed, "wq_worker_info", worker="w1@host", host="host", version=wq.__version__, tags="a,b") == 1


def test_task_hooks_count_starts_results_cpu_time_duration_and_queue_wait():
    metrics = make_metrics()
    metrics.task_started({b"sub": b"1000000000000000", b"ts": b"1000000002500000"})  # waited 2.5 s
    metrics.task_started({b"sub": b"1000000009000000", b"ts": b"1000000008000000"})  # clocks disagree: 0
    metrics.task_finished({"r": 0, "meas": json.dumps({"cpu_time": 1.25, "wall_time": 3.0})})
    metrics.task_finished(
        {"r": int(wq.Result.TASK_MAX_RUN_TIME), "meas": json.dumps({"cpu_time": 0.5, "wall_time": 7200.0})}
    )
    metrics.task_finished(None)  # cancelled, or its lease was lost
    parsed = samples(metrics.exposition())
    assert value(parsed, "wq_tasks_started_total") == 2
    assert value(parsed, "wq_tasks_completed_total", result="success") == 1
    assert value(parsed, "wq_tasks_completed_total", result="task_max_run_time") == 1
    assert value(parsed, "wq_tasks_completed_total", result="cancelled") == 1
    assert value(parsed, "wq_tasks_completed_total", result="signal") == 0  # every result exists from the start
    assert value(parsed, "wq_task_cpu_seconds_total") == pytest.approx(1.75)
    assert value(parsed, "wq_task_duration_seconds_count") == 2
    assert value(parsed, "wq_task_duration_seconds_bucket", le="3600.0") == 1  # buckets reach hours
    assert value(parsed, "wq_task_duration_seconds_bucket", le="14400.0") == 2
    assert value(parsed, "wq_task_queue_wait_seconds_sum") == pytest.approx(2.5)
    assert value(parsed, "wq_task_queue_wait_seconds_bucket", le="0.01") == 1


def test_cpu_utilization_measures_the_task_processes_not_the_allocation():
    burner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"]
    )
    sleeper = subprocess.Popen(["sleep", "2"])
    try:
        meter = TaskCpuMeter(min_window=0.5)
        time.sleep(1.0)
        ratio = meter.utilization(cores=1)
        again = meter.utilization(cores=1)  # a scrape right after reuses the reading
    finally:
        burner.wait()
        sleeper.wait()
    assert 0.3 < ratio < 1.5  # one busy process kept about one core busy (on a loaded machine, less)
    assert again == ratio


def test_worker_exposition_passes_promtool_check_metrics():
    metrics = make_metrics([GPU(0, ""), GPU(1, "")])
    metrics.task_finished({"r": 0, "meas": json.dumps({"cpu_time": 1.0, "wall_time": 1.0})})
    text = metrics.exposition()
    assert b"wq_gpu_utilization_ratio" in text
    promtool_check_metrics(text)


# -- the worker process -------------------------------------------------------------------------
def record_of(redis_url: str, queue: str, field: str = "metrics") -> dict[str, str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return {
            name: client.hget(f"wq:{{{queue}}}:w:{name}", field) or ""
            for name in client.zrange(f"wq:{{{queue}}}:workers", 0, -1)
        }
    finally:
        client.close()


def test_worker_records_its_metrics_address_and_serves_metrics_and_healthz(redis_url, queue, workers):
    workers.start("--cores", "2", "--name", "m1", "--metrics-port", "0", "--metrics-addr", "127.0.0.1")
    assert wait_until(lambda: record_of(redis_url, queue.name).get("m1@" + socket.gethostname()))
    address = record_of(redis_url, queue.name)["m1@" + socket.gethostname()]
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    queue.submit_many([wq.Task("true") for _ in range(3)])
    drain(queue, 3)
    status, body = http_get(f"http://{address}/metrics")
    parsed = samples(body)
    assert status == 200 and value(parsed, "wq_worker_cores") == 2
    assert value(parsed, "wq_tasks_completed_total", result="success") == 3
    assert value(parsed, "wq_task_queue_wait_seconds_count") == 3
    promtool_check_metrics(body)
    status, body = http_get(f"http://{address}/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_workers_sharing_a_port_range_take_different_ports(redis_url, queue, workers):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1]
    ports = f"{first}-{first + 20}"
    for name in ("a", "b"):
        workers.start("--name", name, "--metrics-port", ports, "--metrics-addr", "127.0.0.1")
    assert wait_until(
        lambda: all(record_of(redis_url, queue.name).values()) and len(record_of(redis_url, queue.name)) == 2
    )
    chosen = {int(a.rsplit(":", 1)[1]) for a in record_of(redis_url, queue.name).values()}
    assert len(chosen) == 2 and all(first <= p <= first + 20 for p in chosen)


def test_a_taken_metrics_port_stops_the_worker_with_a_clear_message(redis_url, queue):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "wq_redis",
                "worker",
                "--redis-url",
                redis_url,
                "--queue",
                queue.name,
                "--metrics-port",
                str(port),
                "--metrics-addr",
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode != 0 and "cannot serve metrics" in result.stderr


def test_healthz_answers_503_when_the_worker_is_unhealthy():
    metrics = make_metrics()
    metrics.healthy = lambda: (False, "no heartbeat reached Redis for 31 s")
    address = metrics.serve("127.0.0.1", range(0, 1))
    try:
        status, body = http_get(f"http://{address}/healthz")
        assert status == 503 and json.loads(body)["reason"].startswith("no heartbeat")
        assert http_get(f"http://{address}/nothing")[0] == 404
    finally:
        metrics.close()


def test_metrics_ports_and_advertised_addresses():
    assert parse_port_range("0") == range(0, 1) and parse_port_range("9750-9752") == range(9750, 9753)
    for bad in ("x", "10-5", "0-10", "70000"):
        with pytest.raises(ValueError):
            parse_port_range(bad)
    assert advertised_address("127.0.0.1", 9) == "127.0.0.1:9"
    assert advertised_address("0.0.0.0", 9) == f"{socket.gethostname()}:9"
    assert advertised_address("0.0.0.0", 9, "w7.cluster") == "w7.cluster:9"
    assert advertised_address("::1", 9) == "[::1]:9"


# -- the exporter --------------------------------------------------------------------------------
def exporter_samples(redis_url: str, **options) -> dict:
    client = redis.Redis.from_url(redis_url)
    try:
        return samples(QueueExporter(client, **options).exposition())
    finally:
        client.close()


def test_exporter_reports_waiting_tasks_by_class_and_tag_with_the_oldest_age(redis_url, queue):
    big = wq.Task("true")
    big.specify_cores(2)
    big.specify_tag("t")
    queue.submit(big)
    time.sleep(0.3)
    urgent = wq.Task("true")
    urgent.specify_cores(2)
    urgent.specify_tag("t")
    urgent.specify_priority(10)  # ahead in line, yet younger: the oldest is not the head
    queue.submit_many([urgent, wq.Task("true"), wq.Task("true")])
    parsed = exporter_samples(redis_url)
    q = queue.name
    assert value(parsed, "wq_tasks_waiting", queue=q, resource_class="c2", tag="t") == 2
    assert value(parsed, "wq_tasks_waiting", queue=q, resource_class="c-1", tag="") == 2
    assert value(parsed, "wq_oldest_waiting_task_age_seconds", queue=q, resource_class="c2", tag="t") >= 0.3
    assert value(parsed, "wq_tasks_waiting_cores", queue=q) == 6
    assert value(parsed, "wq_tasks_submitted_total", queue=q) == 4
    assert value(parsed, "wq_redis_up") == 1


def test_exporter_reports_running_tasks_workers_by_state_and_held_results(redis_url, queue, workers):
    workers.start("--cores", "2", "--name", "busy")
    workers.start("--cores", "1", "--name", "idle", "--tags", "nothing")
    assert wait_until(lambda: len(record_of(redis_url, queue.name, "resources")) == 2)
    for command in ("sleep 30", "head -c 5000 /dev/zero"):
        task = wq.Task(command)
        task.specify_cores(1)  # one core each: both fit the busy worker
        queue.submit(task)
    q = queue.name

    def ready():
        parsed = exporter_samples(redis_url)
        if (
            value(parsed, "wq_tasks_running", queue=q, resource_class="c1", tag="") == 1
            and value(parsed, "wq_tasks_with_results", queue=q) == 1
        ):
            return parsed
        return None

    parsed = wait_until(ready, timeout=20) and ready()
    assert parsed, "the exporter never saw one task running and one result held"
    assert value(parsed, "wq_workers", queue=q, state="busy") == 1
    assert value(parsed, "wq_workers", queue=q, state="idle") == 1
    assert value(parsed, "wq_workers", queue=q, state="unresponsive") == 0
    assert value(parsed, "wq_workers_cores", queue=q) == 3
    assert value(parsed, "wq_tasks_running_cores", queue=q) == 1
    assert value(parsed, "wq_result_bytes", queue=q) == 5000
    assert value(parsed, "wq_tasks_dispatched_total", queue=q) == 2


def test_exporter_counts_a_stopped_worker_as_unresponsive(redis_url, queue, workers):
    worker = workers.start("--cores", "1", "--name", "frozen")
    assert wait_until(lambda: record_of(redis_url, queue.name))
    worker.send_signal(signal.SIGSTOP)
    try:
        assert wait_until(
            lambda: (
                value(
                    exporter_samples(redis_url, stale_seconds=1.0), "wq_workers", queue=queue.name, state="unresponsive"
                )
                == 1
            ),
            timeout=10,
        )
    finally:
        worker.send_signal(signal.SIGCONT)


def test_exporter_finds_every_queue_on_the_redis(redis_url):
    with wq.WorkQueue("alpha", redis_url=redis_url) as a, wq.WorkQueue("beta", redis_url=redis_url) as b:
        a.submit(wq.Task("true"))
        b.submit(wq.Task("true"))
        a._buffer.flush(), b._buffer.flush()  # submit() returns before its task is in Redis
        client = redis.Redis.from_url(redis_url)
        assert find_queues(client) == ["alpha", "beta"]
        client.close()
        parsed = exporter_samples(redis_url)
        assert value(parsed, "wq_exporter_queues") == 2
        assert value(parsed, "wq_tasks_submitted_total", queue="beta") == 1
        assert value(exporter_samples(redis_url, queues=["beta"]), "wq_exporter_queues") == 1


def test_exporter_serves_http_sd_of_live_workers_and_healthz(redis_url, queue, workers):
    workers.start("--name", "sd1", "--metrics-port", "0", "--metrics-addr", "127.0.0.1")
    workers.start("--name", "plain")  # exports no metrics: not a target
    assert wait_until(lambda: len(record_of(redis_url, queue.name)) == 2)
    exporter = Exporter(redis_url)
    try:

        def targets():
            status, body = http_get(exporter.url + "/sd")
            assert status == 200
            return json.loads(body)

        (group,) = targets()
        assert group["labels"]["queue"] == queue.name
        assert group["labels"]["__meta_wq_worker"] == "sd1@" + socket.gethostname()
        assert http_get(f"http://{group['targets'][0]}/healthz")[0] == 200
        assert http_get(exporter.url + "/healthz")[0] == 200
        status, body = http_get(exporter.url + "/metrics")
        assert status == 200 and value(samples(body), "wq_workers", queue=queue.name, state="idle") == 2
        promtool_check_metrics(body)
    finally:
        exporter.stop()


def test_exporter_reports_redis_down_instead_of_failing():
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    parsed = samples(QueueExporter(client, queues=["q"]).exposition())
    assert value(parsed, "wq_redis_up") == 0


def test_exporter_json_dump(redis_url, queue):
    queue.submit(wq.Task("true"))
    out = subprocess.run(
        [sys.executable, "-m", "wq_redis", "exporter", "--redis-url", redis_url, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    dump = json.loads(out.stdout)
    assert dump["queues"][queue.name]["waiting"] == {"c-1|": 1}
    assert dump["targets"] == []


# -- rules, Prometheus config, dashboard -------------------------------------------------------------
def test_alert_rules_pass_their_promtool_unit_tests():
    promtool = require_tool("promtool")
    checked = subprocess.run(
        [promtool, "test", "rules", "wq-redis.rules.test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.join(REPO, "prometheus"),
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_shipped_prometheus_config_is_valid():
    promtool = require_tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "config", "prometheus/prometheus.yml"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def dashboard() -> dict:
    with open(os.path.join(REPO, "grafana", "dashboards", "wq-redis.json")) as handle:
        return json.load(handle)


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_has_a_fixed_uid_and_queue_and_datasource_variables():
    model = dashboard()
    assert model["uid"] == "wq-redis"
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["queue"]["multi"] and variables["queue"]["includeAll"]
    for panel in model["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all('queue=~"$queue"' in t["expr"] or "wq_redis_memory" in t["expr"] for t in panel["targets"])


def test_dashboard_uses_only_metrics_that_exist(redis_url, queue):
    queue.submit(wq.Task("true"))
    queue._buffer.flush()  # submit() returns before its task is in Redis
    client = redis.Redis.from_url(redis_url)
    try:
        exported = family_names(QueueExporter(client).exposition())
    finally:
        client.close()
    exported |= family_names(make_metrics([GPU(0, "")]).exposition())
    used = {m for e in dashboard_exprs() for m in re.findall(r"\b(wq_[a-z_]+)\b", e)}
    assert used and used <= exported, used - exported
