"""A real Prometheus scrapes two workers (found through the exporter's http_sd endpoint) and
the exporter while tasks run; every expression of the Grafana dashboard and of the rules
file is then evaluated through Prometheus' HTTP API.

One workload for the module (about 20 s): Prometheus on a free loopback port with a
temporary storage directory, scraping every second; the exporter; a worker with two
(fake) GPUs and a plain one; a third worker that is killed so that WqWorkerLost fires;
tasks that succeed, fail (time limit), use the CPU, hold GPUs, and one that no worker
fits (it keeps waiting).  Every process is stopped at teardown.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import Workers, drain
from monitoring_helpers import REPO, Exporter, free_port, http_get, promtool_check_metrics, require_tool, wait_for

import wq_redis as wq

pytestmark = pytest.mark.monitoring
RULES = os.path.join(REPO, "prometheus", "wq-redis.rules.yml")
DASHBOARD = os.path.join(REPO, "grafana", "dashboards", "wq-redis.json")
RATE_INTERVAL = "5s"  # what Grafana's $__rate_interval would be for a 1 s scrape interval


class Prometheus:
    def __init__(self, workdir: str, config: dict[str, Any]) -> None:
        path = os.path.join(workdir, "prometheus.yml")
        with open(path, "w") as handle:
            json.dump(config, handle)  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(workdir, "prometheus.log"), "wb")
        self.process = subprocess.Popen(
            [
                require_tool("prometheus"),
                f"--config.file={path}",
                f"--storage.tsdb.path={workdir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        ready = wait_for(lambda: self.process.poll() is not None or self._ready(), timeout=30)
        assert ready and self.process.poll() is None, self.log_text()

    def _ready(self) -> bool:
        try:
            return http_get(self.url + "/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def api(self, path: str, **params: Any) -> Any:
        status, body = http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=10)
        reply = json.loads(body)
        assert status == 200 and reply["status"] == "success", (path, params, reply)
        return reply["data"]

    def query_range(self, expr: str, start: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=time.time(), step=1)["result"]

    def log_text(self) -> str:
        self.log.flush()
        with open(self.log.name, errors="replace") as handle:
            return handle.read()[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def has_values(result: list[dict[str, Any]]) -> bool:
    """Some series has some finite value (a NaN ratio of nothing over nothing is no data)."""
    return any(not math.isnan(float(v)) for series in result for _, v in series.get("values", []))


class Run:
    """What the module's tests look at once the workload ran."""

    def __init__(
        self, prometheus: Prometheus, exporter: Exporter, queue: str, started: float, worker_addresses: list[str]
    ) -> None:
        self.prometheus, self.exporter, self.queue, self.started = prometheus, exporter, queue, started
        self.worker_addresses = worker_addresses


def submit_workload(q: wq.WorkQueue) -> int:
    tasks = [wq.Task("sleep 0.4") for _ in range(10)]
    tasks += [wq.Task("python3 -c 'import time; t = time.time() + 1\nwhile time.time() < t: pass'") for _ in range(3)]
    for _ in range(3):  # fail: TASK_MAX_RUN_TIME
        slow = wq.Task("sleep 10")
        slow.specify_running_time_max(0.5)
        tasks.append(slow)
    for _ in range(2):
        gpu = wq.Task("echo $CUDA_VISIBLE_DEVICES; sleep 1")
        gpu.specify_gpus(1)
        tasks.append(gpu)
    q.submit_many(tasks)
    unfit = wq.Task("true")  # no worker has 64 cores: waits, ageing, for the whole run
    unfit.specify_cores(64)
    q.submit(unfit)
    return len(tasks)


@pytest.fixture(scope="module")
def run(redis_server) -> Iterator[Run]:
    require_tool("prometheus")
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    queue_name = f"mon-{os.getpid()}"
    workdir = tempfile.mkdtemp(prefix="wq-prometheus-")
    pool = Workers(redis_server.url, queue_name)
    exporter = prometheus = q = None
    try:
        exporter = Exporter(redis_server.url, "--stale-seconds", "3", "--discover-seconds", "1")
        metrics = ["--metrics-port", "0", "--metrics-addr", "127.0.0.1", "--lease-seconds", "2"]
        pool.start(
            "--cores", "2", "--gpus", "2", "--name", "gpu", *metrics, env={"WQ_GPU_PROVIDER": "fake_gpus:provider"}
        )
        pool.start("--cores", "2", "--name", "cpu", *metrics)
        doomed = pool.start("--cores", "1", "--name", "doomed", "--tags", "none", "--lease-seconds", "2")
        prometheus = Prometheus(
            workdir,
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [RULES],
                "scrape_configs": [
                    {"job_name": "wq-exporter", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]},
                    {
                        "job_name": "wq-workers",
                        "http_sd_configs": [{"url": exporter.url + "/sd", "refresh_interval": "1s"}],
                    },
                ],
            },
        )
        # Prometheus hands discovered targets to its scrapers at most every 5 s: wait for the
        # first scrape of all three before the workload starts
        assert wait_for(lambda: len(prometheus.api("query", query="up == 1")["result"]) == 3, timeout=30), (
            prometheus.api("targets")
        )
        started = time.time()
        q = wq.WorkQueue(queue_name, redis_url=redis_server.url)
        count = submit_workload(q)
        time.sleep(1.5)  # the doomed worker's record was scraped as live; now it dies
        doomed.send_signal(signal.SIGKILL)
        drain(q, count, timeout=60)
        # the rules need a few evaluations over the counters that just moved: WqWorkerLost
        # fires (no `for`), WqFailureRatioHigh is pending (`for: 5m`)
        induced = f'count(ALERTS{{alertname=~"WqWorkerLost|WqFailureRatioHigh",queue="{queue_name}"}})'
        assert wait_for(lambda: prometheus.api("query", query=f"{induced} == 2")["result"], timeout=20), prometheus.api(
            "query", query=f'ALERTS{{queue="{queue_name}"}}'
        )
        time.sleep(1.5)  # range queries (1 s steps up to now) then include a step after both
        addresses = [t["targets"][0] for t in json.loads(http_get(exporter.url + "/sd")[1])]
        yield Run(prometheus, exporter, queue_name, started, addresses)
    finally:
        if q is not None:
            q.close()
        pool.stop_all()
        if prometheus is not None:
            prometheus.stop()
        if exporter is not None:
            exporter.stop()
        subprocess.run(["rm", "-rf", workdir], check=False)


def dashboard_queries(queue: str) -> list[tuple[str, str]]:
    with open(DASHBOARD) as handle:
        model = json.load(handle)
    out = []
    for panel in model["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$queue", queue).replace("$__rate_interval", RATE_INTERVAL)
            assert "$" not in expr, f"unhandled Grafana variable in {expr}"
            out.append((f"{panel['title']} / {target.get('legendFormat', '')}", expr))
    return out


def test_workers_are_discovered_through_http_sd_and_scraped(run):
    targets = run.prometheus.api("targets")["activeTargets"]
    workers = [t for t in targets if t["labels"]["job"] == "wq-workers"]
    assert sorted(t["labels"]["instance"] for t in workers) == sorted(run.worker_addresses)
    assert len(workers) == 2
    assert all(t["health"] == "up" and t["labels"]["queue"] == run.queue for t in workers)
    assert [t["health"] for t in targets if t["labels"]["job"] == "wq-exporter"] == ["up"]


def test_every_dashboard_query_returns_data(run):
    empty = [
        name
        for name, expr in dashboard_queries(run.queue)
        if not has_values(run.prometheus.query_range(expr, run.started))
    ]
    assert not empty, f"dashboard queries without data: {empty}"


def test_the_dashboard_queue_variable_lists_the_queue(run):
    values = run.prometheus.api("label/queue/values", **{"match[]": "wq_tasks_submitted_total"})
    assert run.queue in values


def test_every_recording_rule_returns_data(run):
    groups = run.prometheus.api("rules")["groups"]
    recording = [r for g in groups for r in g["rules"] if r["type"] == "recording"]
    assert len(recording) >= 5 and all(r["health"] == "ok" for r in recording), recording
    empty = [r["name"] for r in recording if not has_values(run.prometheus.query_range(r["query"], run.started))]
    assert not empty, f"recording rules without data: {empty}"


def test_alert_rules_evaluate_and_the_induced_alerts_fire(run):
    groups = run.prometheus.api("rules")["groups"]
    alerts = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert {"WqWorkerLost", "WqQueueStuck", "WqFailureRatioHigh", "WqWorkerUnresponsive"} <= set(alerts)
    for rule in alerts.values():
        assert rule["health"] == "ok", rule
        run.prometheus.query_range(rule["query"], run.started)  # a valid query over real series
    # the workload lost a worker and failed 3 of 18 tasks: those conditions hold
    for name in ("WqWorkerLost", "WqFailureRatioHigh"):
        assert has_values(run.prometheus.query_range(alerts[name]["query"], run.started)), name


def test_scraped_metrics_pass_promtool_check_metrics(run):
    for url in [f"http://{a}/metrics" for a in run.worker_addresses] + [run.exporter.url + "/metrics"]:
        status, body = http_get(url)
        assert status == 200
        promtool_check_metrics(body)


def test_gpu_series_come_from_the_gpu_worker_only(run):
    result = run.prometheus.api("query", query=f'wq_gpu_memory_total_bytes{{queue="{run.queue}"}}')["result"]
    assert sorted(r["metric"]["gpu"] for r in result) == ["0", "1"]
    assert len({r["metric"]["instance"] for r in result}) == 1
