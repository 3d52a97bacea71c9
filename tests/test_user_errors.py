"""Errors a new user meets: each one clear line that says what to do, never a traceback
(issue 14, item 8).  Command-line cases run the real ``wq-redis`` in a subprocess."""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys

import pytest
from conftest import TESTS_DIR, drain

import wq_redis as wq
from wq_redis.embedded.server import RedisServer

ROOT = os.path.dirname(TESTS_DIR)


def wq_redis_cli(*args: str, tmp_path=None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WQ_REDIS_URL", "REDIS_URL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    if tmp_path is not None:
        env["TMPDIR"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "wq_redis", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", [["worker"], ["status"], ["exporter", "--json"]])
def test_a_url_without_a_scheme_is_one_line_saying_how_to_write_it(command):
    line = one_error_line(wq_redis_cli(*command, "--redis-url", "localhost:6379"))
    assert "redis://localhost:6379" in line


def test_a_url_without_a_scheme_hides_its_password():
    line = one_error_line(wq_redis_cli("status", "--redis-url", ":hunter2@localhost:6379"))
    assert "redis://" in line and "hunter2" not in line


def test_work_queue_refuses_a_url_without_a_scheme_with_a_value_error():
    with pytest.raises(ValueError, match="redis://localhost:6379"):
        wq.WorkQueue("x", redis_url="localhost:6379")


def test_a_server_on_a_busy_port_says_so_and_removes_its_directory(tmp_path):
    other = RedisServer().start()  # what usually holds the port: another Redis
    try:
        line = one_error_line(wq_redis_cli("server", "--port", str(other.port), tmp_path=tmp_path))
    finally:
        other.stop()
    assert "address already in use" in line
    assert glob.glob(str(tmp_path / "wq-redis-server-*")) == []


def test_a_server_on_a_port_held_by_something_else_says_so(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        line = one_error_line(wq_redis_cli("server", "--port", str(holder.getsockname()[1]), tmp_path=tmp_path))
    assert "address already in use" in line
    assert glob.glob(str(tmp_path / "wq-redis-server-*")) == []


def test_a_worker_waiting_for_redis_says_where_once_without_the_password():
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
    run = wq_redis_cli("worker", "--redis-url", url, "--connect-timeout", "2")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.count("connecting to redis://127.0.0.1:") == 1
    assert "(password hidden)" in run.stderr
    assert "hunter2" not in run.stderr


def test_a_function_whose_module_a_worker_cannot_import_names_pythonpath_and_pickling_by_value(
    queue, workers, tmp_path, monkeypatch
):
    (tmp_path / "users_own_module.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the manager imports it; the worker cannot
    import users_own_module

    workers.start()
    queue.submit(wq.PythonTask(users_own_module.triple, 1))
    [task] = drain(queue, 1)
    assert task.result != wq.WORK_QUEUE_RESULT_SUCCESS
    assert "PYTHONPATH" in task.error
    assert "cloudpickle.register_pickle_by_value(users_own_module)" in task.error


def _big(n):
    return b"x" * n


def test_a_result_over_the_limit_names_the_workers_option(queue, workers):
    workers.start("--max-result-bytes", "1024")
    queue.submit(wq.PythonTask(_big, 4096))
    [task] = drain(queue, 1)
    assert task.result == wq.WORK_QUEUE_RESULT_OUTPUT_TRANSFER_ERROR
    assert "--max-result-bytes" in task.error
