"""The worker process: signals, burst and idle exit, lost workers, the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import drain, wait_until
from helpers_tasks import my_sum, timed_sleep

import wq_redis as wq


def test_sigterm_finishes_running_tasks_then_exits(queue, workers):
    worker = workers.start("--cores", "1")
    task_id = queue.submit(wq.PythonTask(timed_sleep, 1.5))
    assert wait_until(lambda: queue.task_state(task_id) == wq.WORK_QUEUE_TASK_RUNNING)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    task = queue.wait(1)
    assert task is not None and task.id == task_id and task.result == wq.WORK_QUEUE_RESULT_SUCCESS
    assert queue.stats.workers_connected == 0  # it said goodbye


def test_second_sigterm_hands_running_tasks_back(queue, workers):
    worker = workers.start("--cores", "1", "--name", "quitter")
    task_id = queue.submit(wq.PythonTask(timed_sleep, 30))
    assert wait_until(lambda: queue.task_state(task_id) == wq.WORK_QUEUE_TASK_RUNNING)
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert wait_until(lambda: queue.task_state(task_id) == wq.WORK_QUEUE_TASK_READY, timeout=5)
    assert queue.stats.tasks_waiting == 1


def test_burst_worker_exits_when_nothing_is_left(queue, workers):
    queue.submit_many([wq.PythonTask(my_sum, i, i) for i in range(5)])
    worker = workers.start("--cores", "2", "--burst")
    assert worker.wait(30) == 0
    assert len(drain(queue, 5, timeout=5)) == 5


def test_idle_timeout_exits(queue, workers):
    worker = workers.start("--cores", "1", "--idle-timeout", "0.5")
    assert worker.wait(15) == 0


@pytest.mark.faults
def test_killed_worker_tasks_are_finished_by_another(queue, workers):
    doomed = workers.start("--cores", "2", "--lease-seconds", "1", "--name", "doomed")
    tasks = [wq.PythonTask(timed_sleep, 2), wq.Task("sleep 2 | cat && sleep 1")]
    for task in tasks:
        task.specify_cores(1)  # both at once
    ids = queue.submit_many(tasks)
    assert wait_until(lambda: queue.stats.tasks_running == 2)
    time.sleep(0.3)
    children = psutil.Process(doomed.pid).children(recursive=True)
    assert any(p.name() == "sleep" for p in children)
    assert children, "the tasks run in child processes of the worker"
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, "a killed worker's task processes must not run on as orphans"
    workers.start("--cores", "2", "--lease-seconds", "1", "--name", "rescuer")
    done = drain(queue, 2, timeout=30)
    assert sorted(t.id for t in done) == ids
    assert all(t.worker.startswith("rescuer@") for t in done)
    assert all(t.total_submissions == 2 for t in done)
    assert queue.stats.tasks_requeued == 2


@pytest.mark.faults
def test_lost_worker_task_with_retries_spent_is_max_retries(queue, workers):
    doomed = workers.start("--cores", "1", "--lease-seconds", "1")
    task = wq.PythonTask(timed_sleep, 30)
    task.specify_max_retries(1)
    queue.submit(task)
    for attempt in (1, 2):
        assert wait_until(
            lambda attempt=attempt: queue._store.task_fields(task.id, "s", "a") == [b"2", str(attempt).encode()],
            timeout=10,
        )
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        doomed = workers.start("--cores", "1", "--lease-seconds", "1")
    back = queue.wait(30)
    assert back is task
    assert task.result == wq.WORK_QUEUE_RESULT_MAX_RETRIES and "retries exhausted" in task.error
    assert task.return_status == -1  # as Work Queue's: the attempt that would have set it was lost
    assert task.total_submissions == 2


def test_worker_registers_name_at_host_and_resources(queue, workers):
    workers.start("--cores", "3", "--memory", "512", "--disk", "100", "--name", "alpha")
    assert wait_until(lambda: queue.stats.workers_connected == 1)
    stats = queue.stats
    assert (stats.total_cores, stats.total_memory, stats.total_disk) == (3, 512, 100)
    queue.submit(wq.PythonTask(my_sum, 1, 1))
    assert queue.wait(30).worker == f"alpha@{os.uname().nodename}"


def test_worker_reads_the_url_from_the_environment(redis_url, queue_name):
    env = {**os.environ, "WQ_REDIS_URL": redis_url, "PYTHONPATH": os.path.dirname(__file__)}
    worker = subprocess.Popen([sys.executable, "-m", "wq_redis", "worker", "--queue", queue_name, "--burst"], env=env)
    try:
        with wq.WorkQueue(queue_name, redis_url=redis_url) as q:
            q.submit(wq.PythonTask(my_sum, 5, 5))
            task = q.wait(30)
            assert task is not None and task.output == 10
    finally:
        worker.kill()
        worker.wait()


def test_worker_without_url_says_what_is_missing(monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("WQ_REDIS_URL", "REDIS_URL")}
    run = subprocess.run([sys.executable, "-m", "wq_redis", "worker"], env=env, capture_output=True, text=True)
    assert run.returncode == 2
    assert "--redis-url" in run.stderr


def test_worker_with_unreachable_redis_fails_clearly():
    from wq_redis.embedded.server import free_port

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "wq_redis",
            "worker",
            "--connect-timeout",
            "0.5",
            "--redis-url",
            f"redis://127.0.0.1:{free_port()}/0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1
    assert "cannot reach Redis" in run.stderr


def test_worker_help_names_the_environment_fallbacks():
    run = subprocess.run([sys.executable, "-m", "wq_redis", "worker", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "WQ_REDIS_URL" in run.stdout


def test_worker_started_before_redis_waits_for_it(tmp_path, queue_name):
    from conftest import Workers

    from wq_redis.embedded.server import RedisServer, free_port

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    pool = Workers(url, queue_name)
    worker = pool.start("--cores", "1", "--connect-timeout", "30")
    server = None
    try:
        time.sleep(1.0)
        assert worker.poll() is None, "the worker gave up instead of waiting for Redis"
        server = RedisServer(port=port, data_dir=str(tmp_path)).start()
        with wq.WorkQueue(queue_name, redis_url=url) as q:
            q.submit(wq.PythonTask(my_sum, 4, 4))
            task = q.wait(30)
            assert task is not None and task.output == 8
    finally:
        pool.stop_all()
        if server is not None:
            server.stop()
