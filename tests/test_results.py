"""Result codes and return statuses as Work Queue reports them.

A task whose input file is missing or unreadable is not refused at submit: it comes back
from ``wait`` with ``INPUT_MISSING`` and return status -1, never sent to a worker.  A task
stopped by a limit has Work Queue's return status: 9 (SIGKILL) at a time limit, 143
(128 + SIGTERM, the resource monitor's) over its memory or disk, -1 when it never ran.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from conftest import drain
from helpers_tasks import my_sum

import wq_redis as wq
from wq_redis.protocol.files import FileTooLarge, sha256

NOBODY = 65534  # the uid the unreadable-input test reads as, when the tests run as root


def run_one(queue, workers, task, *worker_args, timeout=30.0):
    workers.start("--cores", "2", *worker_args)
    queue.submit(task)
    back = queue.wait(timeout)
    assert back is task
    return back


def never_in_redis(queue, task_id):
    """Whether no hash was ever written for ``task_id``: no worker could have seen it."""
    return queue._store.task_fields(task_id, "s") == [None]


# -- a missing input: INPUT_MISSING from wait, not an exception from submit ------------------
def test_a_task_with_a_missing_input_comes_back_input_missing(queue, workers, tmp_path):
    workers.start("--cores", "1")
    task = wq.Task("cat x")
    task.specify_input_file(str(tmp_path / "absent.txt"), "x")
    task_id = queue.submit(task)
    assert isinstance(task_id, int) and task.id == task_id
    assert not queue.empty()
    assert queue.wait(5) is task
    assert task.result == wq.WORK_QUEUE_RESULT_INPUT_MISSING == 1
    assert task.return_status == -1 and task.result_str == "INPUT_MISS"
    assert "absent.txt" in task.error
    assert task.hostname is None and task.total_submissions == 0
    assert never_in_redis(queue, task_id)
    assert queue.empty() and queue.wait(0) is None


def test_stats_count_a_task_with_a_missing_input_as_submitted_and_failed(queue, tmp_path):
    task = wq.Task("cat x")
    task.specify_input_file(str(tmp_path / "absent.txt"), "x")
    queue.submit(task)
    assert queue.wait(5) is task
    stats = queue.stats
    assert (stats.tasks_submitted, stats.tasks_done, stats.tasks_failed) == (1, 1, 1)
    assert (stats.tasks_dispatched, stats.tasks_waiting, stats.tasks_outstanding) == (0, 0, 0)
    counts = queue.stats_category("default")
    assert (counts.tasks_submitted, counts.tasks_done, counts.tasks_failed) == (1, 1, 1)


def test_missing_inputs_among_good_tasks_in_submit_many(queue, workers, tmp_path):
    workers.start("--cores", "2")
    present = tmp_path / "present.txt"
    present.write_text("here\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    def reading(path, cache=False):
        task = wq.Task("cat x")
        task.specify_input_file(str(path), "x", cache=cache)
        return task

    absent_dir = wq.Task("ls d")
    absent_dir.specify_directory(str(tmp_path / "no-such-dir"), "d", wq.WORK_QUEUE_INPUT, recursive=True)
    python = wq.PythonTask(my_sum, 1, 2)
    python.specify_input_file(str(tmp_path / "absent.bin"), "data.bin")
    tasks = [
        reading(present),
        reading(tmp_path / "absent.txt"),
        reading(present, cache=True),
        reading(tmp_path / "absent.txt", cache=True),
        reading(blocker / "below"),  # a path through a file: not a directory (ENOTDIR)
        absent_dir,
        python,
        wq.PythonTask(my_sum, 2, 3),
    ]
    ids = queue.submit_many(tasks)
    assert ids == [t.id for t in tasks] and ids == sorted(ids) and len(set(ids)) == len(ids)
    back = {t.id: t for t in drain(queue, len(tasks))}
    assert queue.empty()
    good, missing = [tasks[0], tasks[2], tasks[7]], [tasks[1], tasks[3], tasks[4], tasks[5], tasks[6]]
    for task in good:
        assert back[task.id].result == wq.WORK_QUEUE_RESULT_SUCCESS and back[task.id].return_status == 0
    assert tasks[0].output == "here\n" and tasks[7].output == 5
    for task in missing:
        assert back[task.id].result == wq.WORK_QUEUE_RESULT_INPUT_MISSING, back[task.id].error
        assert back[task.id].return_status == -1
        assert never_in_redis(queue, task.id)
    assert "no-such-dir" in absent_dir.error and "absent.bin" in python.error
    assert isinstance(python.output, wq.PythonTaskNoResult)


def test_wait_for_tag_and_for_task_id_return_tasks_with_missing_inputs(queue, tmp_path):
    tasks = []
    for tag in ("a", "b", "c"):
        task = wq.Task("cat x")
        task.specify_tag(tag)
        task.specify_input_file(str(tmp_path / f"absent-{tag}"), "x")
        queue.submit(task)
        tasks.append(task)
    assert queue.wait_for_tag("b", 5) is tasks[1]
    assert queue.wait_for_task_id(tasks[2].id, 5) is tasks[2]
    assert queue.wait(5) is tasks[0]
    assert all(t.result == wq.WORK_QUEUE_RESULT_INPUT_MISSING and t.return_status == -1 for t in tasks)
    assert queue.wait(0) is None and queue.empty()


@contextlib.contextmanager
def _unprivileged() -> Iterator[None]:
    """Root reads any file: as root (CI), the block runs with the effective uid of nobody."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


def test_an_unreadable_input_is_input_missing(queue, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("no\n")
    secret.chmod(0)
    task = wq.Task("cat x")
    task.specify_input_file(str(secret), "x")
    with _unprivileged():  # the manager reads its inputs at submit
        queue.submit(task)
    assert queue.wait(5) is task
    assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_INPUT_MISSING, -1)
    assert "secret.txt" in task.error


def test_an_input_over_the_size_limit_still_raises_at_submit(queue, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 100)
    queue.specify_file_limits(max_file_bytes=10)
    task = wq.Task("cat x")
    task.specify_input_file(str(big), "x")
    with pytest.raises(FileTooLarge, match=r"big\.bin"):
        queue.submit(task)
    assert task.id is None and queue.empty()


# -- return_status of each result, on a real worker ------------------------------------------
def test_running_time_max_is_max_wall_time_with_status_9(queue, workers):
    task = wq.Task("sleep 30")
    task.specify_running_time_max(1)
    run_one(queue, workers, task)
    assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_TASK_MAX_RUN_TIME, 9)
    assert task.result == 56 and task.result_str == "MAX_WALL_TIME"


def test_a_python_task_at_its_running_time_max_has_status_9(queue, workers):
    task = wq.PythonTask(time.sleep, 30)
    task.specify_running_time_max(1)
    run_one(queue, workers, task)
    assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_TASK_MAX_RUN_TIME, 9)


def test_end_time_while_running_is_end_time_with_status_9(queue, workers):
    task = wq.Task("sleep 30")
    workers.start("--cores", "1")
    queue.submit(wq.PythonTask(my_sum, 0, 0))  # the worker is up once this is back
    assert queue.wait(30).output == 0
    task.specify_end_time(int((time.time() + 1.5) * 1e6))
    queue.submit(task)
    assert queue.wait(30) is task
    assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_TASK_TIMEOUT, 9)
    assert task.result == 24 and task.result_str == "END_TIME"


def test_end_time_passed_before_it_ran_has_status_minus_1(queue, workers):
    task = wq.Task("true")
    task.specify_end_time(int((time.time() - 1) * 1e6))
    run_one(queue, workers, task)
    assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_TASK_TIMEOUT, -1)


def test_a_command_killed_by_a_signal_has_the_signal_number(queue, workers):
    task = run_one(queue, workers, wq.Task("kill -TERM $$"))
    assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_SIGNAL, 15)


def test_memory_over_its_limit_is_resource_exhaustion_with_status_143(redis_url, queue_name, workers):
    hog = "import time; b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(10)"
    with wq.WorkQueue(queue_name, redis_url=redis_url, enforce_limits=True) as q:
        task = wq.Task(f'{sys.executable} -c "{hog}"')
        task.specify_memory(100)
        workers.start("--cores", "1", "--memory", "2000")
        q.submit(task)
        assert q.wait(30) is task
    assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_RESOURCE_EXHAUSTION, 143)
    assert task.result == 16


def test_disk_over_its_limit_is_disk_full_with_status_143(redis_url, queue_name, workers):
    with wq.WorkQueue(queue_name, redis_url=redis_url) as q:
        q.enable_monitoring()
        task = wq.Task("head -c 5000000 /dev/zero > big; sleep 10")
        task.specify_disk(1)  # a hundredth of the worker's disk: and of its memory, 20 MB
        workers.start("--cores", "1", "--memory", "2000", "--disk", "100")
        q.submit(task)
        assert q.wait(30) is task
    assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_DISK_ALLOC_FULL, 143)


def test_an_input_the_worker_cannot_stage_is_input_missing_with_status_1(queue, workers, redis_url, tmp_path):
    source = tmp_path / "cached.txt"
    source.write_bytes(b"cached input of this test\n")
    task = wq.Task("cat x")
    task.specify_input_file(str(source), "x", cache=True)
    queue.submit(task)
    queue._send_buffered()
    redis.Redis.from_url(redis_url).delete(queue._store.keys.file(sha256(source.read_bytes())))
    workers.start("--cores", "1")
    assert queue.wait(30) is task
    assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_INPUT_MISSING, 1)
    assert "no longer in Redis" in task.error


def test_a_missing_output_keeps_the_exit_status(queue, workers, tmp_path):
    task = wq.Task("exit 3")
    task.specify_output_file(str(tmp_path / "never.txt"), "never.txt")
    run_one(queue, workers, task)
    assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_OUTPUT_MISSING, 3)
