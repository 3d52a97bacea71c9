"""Work Queue's automatic allocation modes, run by real workers (issue 16, item 6).

A category in mode MAX, MIN_WASTE or MAX_THROUGHPUT sizes its tasks from what its
finished tasks measured (client/allocation.py, category.c's rules), a bucketing mode from
its bucketing manager; the manager publishes the category's label and claims read it
(claim.lua).  The numbers below are worked out from those rules for the worker each test
starts.
"""

from __future__ import annotations

import sys

import pytest
import redis
from conftest import drain, wait_until

import wq_redis as wq
from wq_redis.protocol.keys import QueueKeys
from wq_redis.protocol.resources import category_hex

SPARSE_800_MB = "dd count=0 bs=800M seek=1 of=nulls 2>/dev/null"  # an 800 MB sandbox, no blocks written
SMALL = "dd count=0 bs=1M seek=1 of=nulls 2>/dev/null"
# 700 MB held for a second: the worker samples memory every 0.25 s, and a task gone before a
# sample is not caught
HOG = "b = bytearray(700 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(1)"


def _given(task: wq.Task) -> tuple:
    r = task.resources_allocated
    return (r.cores, r.memory, r.disk, r.gpus)


def _task(command: str, category: str, priority: int = 0) -> wq.Task:
    task = wq.Task(command)
    task.specify_category(category)
    task.specify_priority(priority)
    return task


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # the largest measured: disk 800 + a third of a 250 MB bucket, rounded up to 1000,
        # half of the worker's disk: half of everything (Work Queue's auto_modes.py)
        (wq.WORK_QUEUE_ALLOCATION_MODE_MAX, (2, 500, 1000, 0)),
        # the buckets that waste least / give the most throughput: 1 core, 250 MB, 250 MB:
        # a quarter of the worker
        (wq.WORK_QUEUE_ALLOCATION_MODE_MIN_WASTE, (1, 250, 500, 0)),
        (wq.WORK_QUEUE_ALLOCATION_MODE_MAX_THROUGHPUT, (1, 250, 500, 0)),
    ],
)
def test_an_automatic_mode_sizes_tasks_from_what_its_finished_tasks_measured(queue, workers, mode, expected):
    queue.enable_monitoring()  # the worker measures the sandbox's disk
    queue.tune("category-steady-n-tasks", 1)
    assert queue.specify_category_mode("auto", mode) == 1
    workers.start("--cores", "4", "--memory", "1000", "--disk", "2000")
    first = _task(SPARSE_800_MB, "auto", priority=10)
    queue.submit(first)
    assert queue.wait(30) is first and first.resources_measured.disk == 800
    assert _given(first) == (4, 1000, 2000, 0)  # nothing measured yet: the whole worker
    queue.submit_many([_task(SMALL, "auto") for _ in range(6)])
    done = drain(queue, 6)
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in done)
    assert _given(done[-1]) == expected


def test_a_bucketing_mode_starts_from_its_defaults(queue, workers):
    # bucketing's first prediction: 1 core, 1000 MB memory and disk; proportionally half of
    # this worker, as CCTools' wq_alloc_test.py expects
    queue.specify_category_mode("b", wq.WORK_QUEUE_ALLOCATION_MODE_GREEDY_BUCKETING)
    workers.start("--cores", "4", "--memory", "2000", "--disk", "2000")
    task = _task("true", "b")
    queue.submit(task)
    drain(queue, 1)
    assert _given(task) == (2, 1000, 1000, 0)


def test_a_task_that_runs_out_of_its_first_allocation_is_retried_at_the_maximum(queue, workers):
    queue.enable_monitoring()
    queue.tune("category-steady-n-tasks", 1)
    queue.specify_category_mode("grow", wq.WORK_QUEUE_ALLOCATION_MODE_MAX)
    workers.start("--cores", "4", "--memory", "2000", "--disk", "2000")
    queue.submit_many([_task("true", "grow") for _ in range(2)])
    drain(queue, 2)  # the first allocation now: 1 core, 250 MB, 250 MB: a quarter of the worker (500 MB)
    hog = _task(f'{sys.executable} -c "{HOG}"', "grow")
    declared = _task(f'{sys.executable} -c "{HOG}"', "grow")
    declared.specify_memory(300)  # its own limit: a larger allocation is not its to get
    queue.submit_many([hog, declared])
    done = {t.id: t for t in drain(queue, 2, timeout=60)}
    assert done[hog.id].result == wq.WORK_QUEUE_RESULT_SUCCESS, done[hog.id].error
    assert _given(hog) == (4, 2000, 2000, 0)  # the category's maximum: none, so the whole worker
    assert hog.total_submissions == 2  # the attempt that ran out, then the one at the maximum
    assert declared.result == wq.WORK_QUEUE_RESULT_RESOURCE_EXHAUSTION
    assert declared.limits_exceeded is not None and declared.limits_exceeded.memory == 500


def test_claims_of_an_automatic_category_wait_until_the_manager_learned_every_result(
    queue, workers, redis_url, queue_name
):
    queue.specify_category_mode("learn", wq.WORK_QUEUE_ALLOCATION_MODE_MAX)
    first, second = _task("true", "learn", priority=1), _task("true", "learn")
    queue.submit_many([first, second])
    queue._send_buffered()
    client = redis.Redis.from_url(redis_url)
    keys = QueueKeys(queue_name)
    workers.start("--cores", "1")
    assert wait_until(lambda: client.hget(keys.task(first.id), "s") == b"3", timeout=30)  # finished
    # the manager has not retrieved it: the second task is not sized (nor taken) before it has
    assert not wait_until(lambda: client.hget(keys.task(second.id), "s") != b"1", timeout=1.5)
    label = client.hgetall(keys.label(category_hex("learn")))
    assert (label[b"done"], label[b"seen"]) == (b"1", b"0")
    assert {t.id for t in drain(queue, 2)} == {first.id, second.id}
    assert client.hget(keys.label(category_hex("learn")), "seen") == b"2"


@pytest.mark.parametrize(
    "garbage",
    [{"v": "not numbers", "done": "x", "seen": "y"}, {"v": "1 2 3", "done": "999999", "seen": "0"}],
)
def test_a_label_holding_garbage_neither_stops_nor_misleads_the_category(
    queue, workers, redis_url, queue_name, garbage
):
    queue.specify_category_mode("g", wq.WORK_QUEUE_ALLOCATION_MODE_MIN_WASTE)
    client = redis.Redis.from_url(redis_url)
    key = QueueKeys(queue_name).label(category_hex("g"))
    client.delete(key)
    client.hset(key, mapping=garbage)
    workers.start("--cores", "2", "--memory", "1000", "--disk", "1000")
    tasks = [_task("true", "g") for _ in range(3)]
    queue.submit_many(tasks)
    done = drain(queue, 3, timeout=40)
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in done)
    assert all(_given(t) == (2, 1000, 1000, 0) for t in done)  # nothing learned yet: the whole worker
    assert client.hget(key, "v").split()[:4] == [b"-1"] * 4  # the manager's own label is back
