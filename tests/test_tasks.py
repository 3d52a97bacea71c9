"""What a task does on a worker and what comes back: outputs, files, errors, limits."""

from __future__ import annotations

import os
import sys

import psutil
import redis
from conftest import drain, wait_until
from helpers_tasks import env_value, fail, hard_exit, my_sum

import wq_redis as wq


def run_one(queue, workers, task, *worker_args, timeout=30.0):
    workers.start("--cores", "2", *worker_args)
    queue.submit(task)
    done = queue.wait(timeout)
    assert done is task
    return done


def test_command_task_with_input_and_output_files(queue, workers, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\n")
    target = tmp_path / "results" / "count.txt"
    task = wq.Task("echo hello; wc -l < data.txt > count.txt")
    task.specify_input_file(str(source), "data.txt")
    task.specify_output_file(str(target), "count.txt")
    run_one(queue, workers, task)
    assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS and task.return_status == 0
    assert task.output == "hello\n" and task.std_output == "hello\n"
    assert target.read_text().strip() == "2"
    assert task.hostname and task.worker.endswith("@" + task.hostname)


def test_buffer_becomes_a_file_in_the_sandbox(queue, workers):
    task = wq.Task("cat sub/greeting.txt")
    task.specify_buffer("hi there", "sub/greeting.txt")
    assert run_one(queue, workers, task).output == "hi there"


def test_exit_code_is_the_return_status(queue, workers):
    task = run_one(queue, workers, wq.Task("echo oops >&2; exit 3"))
    assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS  # it ran; the exit code says how
    assert task.return_status == 3 and task.output == "oops\n"


def test_missing_output_file_is_output_missing(queue, workers, tmp_path):
    task = wq.Task("true")
    task.specify_output_file(str(tmp_path / "never.txt"), "never.txt")
    run_one(queue, workers, task)
    assert task.result == wq.WORK_QUEUE_RESULT_OUTPUT_MISSING
    assert task.result_str == "OUTPUT_MISS"
    assert "never.txt" in task.error
    assert not (tmp_path / "never.txt").exists()


def test_python_task_returns_its_value(queue, workers):
    task = run_one(queue, workers, wq.PythonTask(my_sum, 10, 20))
    assert task.output == 30 and task.return_status == 0


def test_python_task_keyword_arguments_and_closures(queue, workers):
    offset = 7

    def add(x, *, y):
        return x + y + offset

    task = run_one(queue, workers, wq.PythonTask(add, 1, y=2))
    assert task.output == 10


def test_exception_in_python_task_is_its_output(queue, workers):
    task = run_one(queue, workers, wq.PythonTask(fail, "bad input 42"))
    assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS
    assert isinstance(task.output, ValueError) and str(task.output) == "bad input 42"
    assert "about to fail" in task.std_output
    assert "Traceback" in task.std_output and "ValueError: bad input 42" in task.std_output
    assert queue.stats.tasks_failed == 0


def test_python_task_prints_land_in_std_output(queue, workers):
    def noisy():
        import subprocess

        print("from python")
        subprocess.run(["echo", "from a child process"], check=True)
        return "done"

    task = run_one(queue, workers, wq.PythonTask(noisy))
    assert task.output == "done"
    assert "from python" in task.std_output and "from a child process" in task.std_output


def test_environment_variables_reach_both_kinds_of_task(queue, workers, monkeypatch):
    cmd = wq.Task("echo $GREETING-${DROPPED:-unset}-$CORES")
    cmd.specify_environment_variable("GREETING", "hola")
    cmd.specify_environment_variable("DROPPED")
    py = wq.PythonTask(env_value, "GREETING")
    py.specify_environment_variable("GREETING", "salut")
    workers.start("--cores", "2", env={"DROPPED": "worker-value"})
    queue.submit_many([cmd, py])
    drain(queue, 2)
    assert cmd.output.strip() == "hola-unset-2"  # it declared no cores: the whole worker's
    assert py.output == "salut"


def test_environment_does_not_leak_between_python_tasks(queue, workers):
    first = wq.PythonTask(env_value, "LEAK")
    first.specify_environment_variable("LEAK", "yes")
    workers.start("--cores", "1")
    queue.submit(first)
    assert queue.wait(30).output == "yes"
    second = wq.PythonTask(env_value, "LEAK")
    queue.submit(second)
    assert queue.wait(30).output is None


def test_running_time_max_kills_a_command_and_its_children(queue, workers, tmp_path):
    marker = tmp_path / "survivor"
    task = wq.Task(f"(sleep 3; touch {marker}) & sleep 30")
    task.specify_running_time_max(0.5)
    run_one(queue, workers, task)
    assert task.result == wq.WORK_QUEUE_RESULT_TASK_MAX_RUN_TIME
    assert "time limit" in task.error
    # the task's shell and its subshell (a fork: the same command line, which names the
    # marker) are gone, so nothing is left to touch it; instead of waiting out the sleep
    assert wait_until(lambda: not _alive_naming(str(marker))), "a child of the killed task kept running"
    assert not marker.exists(), "a child of the killed task kept running"


def _alive_naming(text: str) -> list[psutil.Process]:
    """The processes (not zombies) whose command line mentions ``text``."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline, status = process.info["cmdline"], process.info["status"]
        if cmdline and status != psutil.STATUS_ZOMBIE and any(text in part for part in cmdline):
            found.append(process)
    return found


def test_running_time_max_kills_a_python_task_and_the_worker_goes_on(queue, workers):
    import time as _time

    slow = wq.PythonTask(_time.sleep, 30)
    slow.specify_running_time_max(0.5)
    run_one(queue, workers, slow)
    assert slow.result == wq.WORK_QUEUE_RESULT_TASK_MAX_RUN_TIME
    assert isinstance(slow.output, wq.PythonTaskNoResult)
    after = wq.PythonTask(my_sum, 1, 2)
    queue.submit(after)
    assert queue.wait(30).output == 3


def test_end_time_in_the_past_is_task_timeout(queue, workers):
    import time as _time

    task = wq.Task("true")
    task.specify_end_time(int((_time.time() - 1) * 1e6))
    assert run_one(queue, workers, task).result == wq.WORK_QUEUE_RESULT_TASK_TIMEOUT


def test_python_task_that_kills_its_process_is_signal(queue, workers):
    dead = wq.PythonTask(hard_exit, 7)
    run_one(queue, workers, dead)
    assert dead.result == wq.WORK_QUEUE_RESULT_SIGNAL and dead.return_status == 7
    killed = wq.PythonTask(os.kill, 0, 9)  # SIGKILL to its own process group
    queue.submit(killed)
    assert queue.wait(30) is killed
    assert killed.result == wq.WORK_QUEUE_RESULT_SIGNAL and killed.return_status == 9
    queue.submit(wq.PythonTask(my_sum, 2, 2))
    assert queue.wait(30).output == 4


def test_command_killed_by_a_signal_is_signal(queue, workers):
    task = run_one(queue, workers, wq.Task("kill -TERM $$"))
    assert task.result == wq.WORK_QUEUE_RESULT_SIGNAL and task.return_status == 15


def test_function_missing_on_the_worker_fails_with_a_clear_message(queue, workers, tmp_path, monkeypatch):
    module = tmp_path / "only_on_manager.py"
    module.write_text("def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_on_manager

    task = run_one(queue, workers, wq.PythonTask(only_on_manager.f))
    assert task.result == wq.WORK_QUEUE_RESULT_UNKNOWN
    assert "only_on_manager" in task.error and "only_on_manager" in task.std_output
    assert isinstance(task.output, wq.PythonTaskNoResult)


def test_unpicklable_return_value_fails_with_a_clear_message(queue, workers):
    def make_lock():
        import threading

        return threading.Lock()

    task = run_one(queue, workers, wq.PythonTask(make_lock))
    assert task.result == wq.WORK_QUEUE_RESULT_UNKNOWN
    assert "cannot be pickled" in task.error


def test_result_over_the_size_limit_is_an_output_transfer_error(queue, workers):
    def big():
        return b"x" * 2_000_000

    workers.start("--cores", "1", "--max-result-bytes", "1000000")
    queue.submit(wq.PythonTask(big))
    task = queue.wait(30)
    assert task.result == wq.WORK_QUEUE_RESULT_OUTPUT_TRANSFER_ERROR
    assert "exceeds the limit" in task.error
    queue.submit(wq.PythonTask(my_sum, 1, 1))
    assert queue.wait(30).output == 2


def test_malformed_task_payload_fails_and_the_worker_goes_on(queue, workers, redis_url):
    from wq_redis.protocol.keys import QueueKeys, padded_id

    keys = QueueKeys(queue.name)
    client = redis.Redis.from_url(redis_url)
    member = "c1.m0.d0.g0|"
    for task_id, spec in ((900001, b"garbage"), (900002, b"WQ\x09{}"), (900003, b'WQ\x01{"kind":')):
        client.hset(keys.task(task_id), mapping={"s": 1, "q": member, "p": 0, "spec": spec})
        client.zadd(keys.ready(member), {padded_id(task_id): 0})
        client.hincrby(keys.stats, "submitted", 1)
    client.sadd(keys.registry, member)
    workers.start("--cores", "1")
    # a manager counts only its own tasks: one attached now adopts those found in the queue
    with wq.WorkQueue(queue.name, redis_url=redis_url) as attached:
        done = {t.id: t for t in drain(attached, 3)}
        assert all(t.result == wq.WORK_QUEUE_RESULT_UNKNOWN for t in done.values())
        assert "not a wq-redis envelope" in done[900001].error
        assert "version 9" in done[900002].error
        assert "truncated or corrupt" in done[900003].error
        attached.submit(wq.PythonTask(my_sum, 1, 1))
        assert attached.wait(30).output == 2


def test_memory_over_the_declared_limit_is_resource_exhaustion(redis_url, queue_name, workers):
    hog = "import time; b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(10)"
    with wq.WorkQueue(queue_name, redis_url=redis_url, enforce_limits=True) as q:
        command = wq.Task(f'{sys.executable} -c "{hog}"')
        command.specify_memory(100)

        def python_hog():
            exec(hog)

        function = wq.PythonTask(python_hog)
        function.specify_memory(100)
        modest = wq.PythonTask(my_sum, 1, 1)
        modest.specify_memory(100)
        workers.start("--cores", "2", "--memory", "2000")
        q.submit_many([command, function, modest])
        done = {t.id: t for t in drain(q, 3)}
    for hog_task in (command, function):
        assert done[hog_task.id].result == wq.WORK_QUEUE_RESULT_RESOURCE_EXHAUSTION, done[hog_task.id].error
        assert "100 MB of memory" in done[hog_task.id].error
    assert done[modest.id].output == 2


def test_limits_are_not_enforced_unless_asked(queue, workers):
    task = wq.Task("head -c 3000000 /dev/zero > big")
    task.specify_disk(1)
    assert run_one(queue, workers, task).result == wq.WORK_QUEUE_RESULT_SUCCESS
