"""No URL: the embedded Redis server, local workers, and the quickstart example."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

import wq_redis as wq
from wq_redis.embedded import server as embedded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_url(monkeypatch):
    monkeypatch.delenv("WQ_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _square(x):
    return x * x


def test_no_url_starts_a_private_server_and_stops_it_with_the_last_queue(no_url):
    first = wq.WorkQueue("a")
    second = wq.WorkQueue("b")
    assert first.redis_url == second.redis_url
    process = psutil.Process(embedded._Embedded.server.process.pid)
    config = {_text(k): _text(v) for k, v in first._client.config_get("append*").items()}
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
    first.close()
    assert process.is_running()
    second.close()
    process.wait(10)
    assert embedded._Embedded.server is None


def test_local_workers_run_tasks_and_stop_with_the_queue(no_url):
    with wq.WorkQueue("local", local_workers=2, local_worker_resources={"cores": 2}) as q:
        pids = [p.pid for p in q._local.processes]
        assert q.map(_square, range(50)) == [x * x for x in range(50)]
        assert q.stats.workers_connected == 2
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_map_keeps_input_order_with_chunks(no_url):
    with wq.WorkQueue("chunks", local_workers=1) as q:
        assert q.map(_square, range(25), chunksize=4) == [x * x for x in range(25)]
        assert q.map(_square, []) == []


def test_map_failed_calls_hold_their_exception(no_url):
    with wq.WorkQueue("mapfail", local_workers=1) as q:
        out = q.map(lambda x: 1 // x, [1, 0, 2])
        assert out[0] == 1 and out[2] == 0
        assert isinstance(out[1], ZeroDivisionError)


def test_map_does_not_steal_other_results(no_url):
    with wq.WorkQueue("mixed", local_workers=1) as q:
        other = q.submit(wq.PythonTask(_square, 9))
        assert q.map(_square, range(5)) == [0, 1, 4, 9, 16]
        task = q.wait(30)
        assert task.id == other and task.output == 81


def test_quickstart_example_runs(no_url):
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "quickstart.py")], capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "task 1 completed with result 30" in run.stdout


def test_server_command_serves_a_queue(tmp_path):
    port = embedded.free_port()
    srv = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wq_redis",
            "server",
            "--port",
            str(port),
            "--dir",
            str(tmp_path),
            "--password",
            "pa:ss@word",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        import json

        info = json.loads(srv.stdout.readline())
        with wq.WorkQueue("served", redis_url=info["url"]) as q:
            q.submit(wq.Task("true"))
            assert q.stats.tasks_waiting == 1
        assert (tmp_path / "appendonlydir").exists() or any(tmp_path.glob("*.aof"))
    finally:
        srv.terminate()
        assert srv.wait(15) == 0
