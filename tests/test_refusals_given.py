"""Work Queue task calls that wq-redis once refused, given Work Queue's meaning, each run
by a real worker: specify_file_piece, limits_exceeded, specify_running_time_min and
specify_start_time_min (accepted with the effect they have under Work Queue itself)."""

from __future__ import annotations

import sys
import warnings

import pytest

import wq_redis as wq
from wq_redis.client.spec import Resources


def test_a_file_piece_is_the_byte_range_both_ends_included(queue, workers, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"0123456789abcdef")
    task = wq.Task("cat middle first; echo; wc -c < whole")
    task.specify_file_piece(str(data), "middle", 4, 9)
    task.specify_file_piece(str(data), "first")  # Work Queue's defaults 0 and 0: one byte
    task.specify_file_piece(str(data), "whole", 0, 15, type=wq.WORK_QUEUE_INPUT, cache=True)
    workers.start("--cores", "1")
    queue.submit(task)
    assert queue.wait(30) is task
    assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS, task.error
    assert task.std_output.split() == ["4567890", "16"]


def test_a_file_piece_as_output_brings_the_whole_file_back_as_work_queue_does(queue, workers, tmp_path):
    out = tmp_path / "out.txt"
    task = wq.Task("echo whole file > result")
    task.specify_file_piece(str(out), "result", 0, 3, type=wq.WORK_QUEUE_OUTPUT)
    workers.start("--cores", "1")
    queue.submit(task)
    assert queue.wait(30) is task
    assert out.read_text() == "whole file\n"


def test_a_file_piece_checks_its_range(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"abc")
    with pytest.raises(ValueError, match="lower than start_byte"):
        wq.Task("true").specify_file_piece(str(data), "x", 2, 1)
    with pytest.raises(ValueError, match="non-negative"):
        wq.Task("true").specify_file_piece(str(data), "x", -1, 1)


def test_limits_exceeded_names_the_limit_a_killed_task_went_over(redis_url, queue_name, workers):
    hog = "b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(10)"
    with wq.WorkQueue(queue_name, redis_url=redis_url) as q:
        q.enable_monitoring()
        memory = wq.Task(f'{sys.executable} -c "{hog}"')
        memory.specify_memory(100)
        disk = wq.Task("head -c 5000000 /dev/zero > big; sleep 10")
        disk.specify_disk(1)
        fine = wq.Task("true")
        fine.specify_memory(100)
        workers.start("--cores", "3", "--memory", "2000", "--disk", "100")  # the disk task gets 20 MB of memory
        q.submit_many([memory, disk, fine])
        for _ in range(3):
            assert q.wait(30) is not None
    assert memory.result == wq.WORK_QUEUE_RESULT_RESOURCE_EXHAUSTION, memory.error
    assert memory.limits_exceeded == Resources(memory=100)  # only the limit it went over
    assert disk.result == wq.WORK_QUEUE_RESULT_DISK_ALLOC_FULL
    assert disk.limits_exceeded is not None and disk.limits_exceeded.disk == 1 and disk.limits_exceeded.memory is None
    assert fine.result == wq.WORK_QUEUE_RESULT_SUCCESS and fine.limits_exceeded is None
    assert wq.Task("true").limits_exceeded is None  # not run yet


def test_running_time_min_and_start_time_min_have_work_queues_effect(queue, workers):
    """A minimum running time binds only workers that declare an end of life (none here);
    Work Queue's own scheduler never delays a task for its start time: both run at once."""
    task = wq.Task("echo ran")
    task.specify_running_time_min(3600)
    with pytest.warns(UserWarning, match="never delays"):
        task.specify_start_time_min(2**62)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wq.Task("true").specify_start_time_min(1)  # warned once
    with pytest.raises((TypeError, ValueError)):
        task.specify_running_time_min("soon")
    workers.start("--cores", "1")
    queue.submit(task)
    assert queue.wait(30) is task
    assert task.std_output == "ran\n"
