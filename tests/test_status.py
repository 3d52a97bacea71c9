"""`wq-redis status`: queues, workers, tasks and categories, as tables and as JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner
from conftest import drain, wait_until
from everyday_tasks import nap, square

import wq_redis as wq
from wq_redis.ops.cli import main
from wq_redis.protocol.sizes import parse_size


def status(redis_url: str, *args: str) -> str:
    result = CliRunner().invoke(main, ["status", "--redis-url", redis_url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def status_json(redis_url: str, *args: str) -> dict:
    return json.loads(status(redis_url, "--json", *args))


def _by_name(report: dict) -> dict:
    return {q["name"]: q for q in report["queues"]}


@pytest.fixture
def one_running(queue, workers):
    """A worker running one task of a queue that has two more waiting (one too big to run)."""
    queue.submit(wq.PythonTask(nap, 30.0))
    workers.start("--cores", "1", "--name", "w1")
    assert wait_until(lambda: queue.stats.tasks_running == 1)
    big = wq.PythonTask(square, 2)
    big.specify_cores(8)
    big.specify_tag("huge")
    queue.submit_many([big, wq.PythonTask(square, 3)])
    return queue


def test_queues_show_waiting_by_resource_class_and_tag(queue, redis_url, queue_name):
    tagged = [wq.Task("true") for _ in range(2)]
    for task in tagged:
        task.specify_cores(2)
        task.specify_tag("render")
    queue.submit_many(tagged + [wq.Task("true")])
    out = status(redis_url)
    assert queue_name in out
    assert "c2" in out and "render" in out and "c-1" in out
    report = _by_name(status_json(redis_url))[queue_name]
    assert report["waiting"] == 3
    assert {(r["class"], r["tag"], r["tasks"]) for r in report["waiting_by_class"]} == {
        ("c2", "render", 2),
        ("c-1", "", 1),
    }


def test_queue_counters_follow_done_failed_and_running_tasks(queue, workers, redis_url, queue_name):
    late = wq.Task("sleep 5")
    late.specify_running_time_max(0.2)
    queue.submit_many([wq.PythonTask(square, i) for i in range(3)] + [late])
    workers.start("--cores", "2")
    drain(queue, 4)
    queue.submit(wq.PythonTask(nap, 30.0))
    assert wait_until(lambda: queue.stats.tasks_running == 1)
    report = _by_name(status_json(redis_url))[queue_name]
    assert (report["done"], report["failed"], report["running"], report["waiting"], report["workers"]) == (
        4,
        1,
        1,
        0,
        1,
    )
    assert report["submitted"] == 5


def test_workers_show_resources_in_use_tasks_and_heartbeat(one_running, redis_url, queue_name):
    (worker,) = _by_name(status_json(redis_url, "-W"))[queue_name]["worker_list"]
    assert worker["name"].startswith("w1@") and worker["host"]
    assert worker["resources"]["cores"] == 1 and worker["in_use"]["cores"] == 1
    assert worker["tasks_running"] == 1
    assert 0 <= worker["last_heartbeat_s"] < 5
    out = status(redis_url, "-W")
    assert "w1@" in out and "ago" in out


def test_tasks_of_a_queue_show_state_tag_worker_and_age(one_running, redis_url, queue_name):
    tasks = _by_name(status_json(redis_url, "-T", "--queue", queue_name))[queue_name]["tasks"]
    assert [t["state"] for t in tasks] == ["RUNNING", "READY", "READY"]
    running, big, _ = tasks
    assert running["worker"].startswith("w1@") and running["attempts"] == 1 and running["age_s"] >= 0
    assert big["tag"] == "huge" and big["class"] == "c8" and big["worker"] is None
    out = status(redis_url, "-T")
    assert "RUNNING" in out and "huge" in out


def test_categories_show_declared_resources_and_tasks(queue, redis_url, queue_name):
    queue.specify_category_max_resources("heavy", {"cores": 4, "memory": 1000})
    heavy = wq.Task("true")
    heavy.specify_category("heavy")
    queue.submit_many([heavy, wq.Task("true")])
    categories = {c["name"]: c for c in _by_name(status_json(redis_url, "-A"))[queue_name]["categories"]}
    assert categories["heavy"]["max_resources"] == {"cores": 4, "memory": 1000}
    assert categories["heavy"]["waiting"] == 1 and categories["default"]["waiting"] == 1
    assert "heavy" in status(redis_url, "-A")


def test_queues_are_found_on_the_redis_or_chosen_with_queue(redis_url):
    first, second = wq.WorkQueue("first", redis_url=redis_url), wq.WorkQueue("second", redis_url=redis_url)
    first.submit(wq.Task("true"))
    second.submit(wq.Task("true"))
    # submit sends in the background; the counters are read after the queue sent them
    assert first.stats.tasks_submitted == second.stats.tasks_submitted == 1
    assert set(_by_name(status_json(redis_url))) == {"first", "second"}
    assert set(_by_name(status_json(redis_url, "-M", "second"))) == {"second"}
    first.close()
    second.close()


def test_an_empty_redis_says_so(redis_url):
    assert "no queues" in status(redis_url)
    assert status_json(redis_url)["queues"] == []


def test_watch_redraws_until_interrupted(queue, redis_url, queue_name):
    queue.submit(wq.Task("true"))
    process = subprocess.Popen(
        [sys.executable, "-m", "wq_redis", "status", "--watch", "--interval", "0.2"],
        env={**os.environ, "WQ_REDIS_URL": redis_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert queue_name in out.decode()


def test_the_commands_defaults_are_those_of_what_they_configure():
    """The CLI writes its defaults instead of importing the worker and the exporter (so that
    --help stays light); they must still be the defaults of what each option sets."""
    import dataclasses
    import inspect

    from wq_redis.ops import exporter as exporter_module
    from wq_redis.ops.status import status_command
    from wq_redis.protocol.report import gather
    from wq_redis.worker.loop import WorkerOptions

    def defaults(command) -> dict:
        return {p.name: p.default for p in command.params if isinstance(p, click.Option)}

    worker = defaults(main.commands["worker"])
    option_defaults = {f.name: f.default for f in dataclasses.fields(WorkerOptions)}
    for name in (
        "queue",
        "idle_timeout",
        "wall_time",
        "lease_seconds",
        "reserve_after",
        "max_result_bytes",
        "cache_mb",
    ):
        assert worker[name] == option_defaults[name], name
    assert worker["metrics_addr"] == option_defaults["metrics_addr"]
    assert parse_size(worker["max_task_bytes"]) == option_defaults["max_task_bytes"]
    exporter = defaults(main.commands["exporter"])
    constructor = inspect.signature(exporter_module.QueueExporter).parameters
    for name in ("stale_seconds", "discover_seconds"):
        assert exporter[name] == constructor[name].default, name
    assert defaults(status_command)["limit"] == inspect.signature(gather).parameters["limit"].default
