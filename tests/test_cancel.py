"""Cancelling tasks by id and by tag, waiting or running."""

from __future__ import annotations

import time

from conftest import drain, wait_until
from helpers_tasks import my_sum, timed_sleep

import wq_redis as wq


def test_cancel_waiting_task_by_id(queue):
    keep = queue.submit(wq.Task("true"))
    victim = wq.Task("true")
    victim_id = queue.submit(victim)
    cancelled = queue.cancel_by_taskid(victim_id)
    assert cancelled is victim
    assert queue.task_state(victim_id) == wq.WORK_QUEUE_TASK_CANCELED
    stats = queue.stats
    assert stats.tasks_waiting == 1 and stats.tasks_cancelled == 1
    assert queue.task_state(keep) == wq.WORK_QUEUE_TASK_READY
    assert queue.cancel_by_taskid(victim_id) is None  # only once


def test_cancelled_task_never_runs_and_never_comes_back(queue, workers, tmp_path):
    marker = tmp_path / "ran"
    victim = queue.submit(wq.Task(f"touch {marker}"))
    queue.cancel_by_taskid(victim)
    survivor = queue.submit(wq.PythonTask(my_sum, 1, 1))
    workers.start("--cores", "1")
    assert queue.wait(30).id == survivor
    assert queue.wait(0.5) is None and queue.empty()
    assert not marker.exists()


def test_cancel_by_tasktag_cancels_every_task_with_that_tag(queue, workers):
    tasks = []
    for i in range(6):
        t = wq.PythonTask(my_sum, i, 0)
        t.specify_tag("doomed" if i % 2 else "kept")
        tasks.append(t)
    queue.submit_many(tasks)
    cancelled = queue.cancel_by_tasktag("doomed")
    assert sorted(t.id for t in cancelled) == sorted(t.id for t in tasks if t.tag == "doomed")
    workers.start("--cores", "2")
    done = drain(queue, 3)
    assert {t.tag for t in done} == {"kept"}
    assert queue.empty()


def test_cancel_reaches_a_running_task(queue, workers, tmp_path):
    marker = tmp_path / "finished"
    long = wq.Task(f"sleep 20; touch {marker}")
    long.specify_tag("long")
    workers.start("--cores", "1")
    task_id = queue.submit(long)
    assert wait_until(lambda: queue.task_state(task_id) == wq.WORK_QUEUE_TASK_RUNNING)
    time.sleep(0.2)
    assert [t.id for t in queue.cancel_by_tasktag("long")] == [task_id]
    # the worker learns of it at its next heartbeat, kills the task and frees the core
    queue.submit(wq.PythonTask(my_sum, 3, 4))
    started = time.monotonic()
    nxt = queue.wait(30)
    assert nxt.output == 7
    assert time.monotonic() - started < 15, "the cancelled task kept its core"
    assert queue.stats.tasks_late_results == 0
    assert not marker.exists()


def test_cancel_a_running_python_task(queue, workers):
    workers.start("--cores", "1")
    task_id = queue.submit(wq.PythonTask(timed_sleep, 30))
    assert wait_until(lambda: queue.task_state(task_id) == wq.WORK_QUEUE_TASK_RUNNING)
    assert queue.cancel_by_taskid(task_id).id == task_id
    queue.submit(wq.PythonTask(my_sum, 1, 1))
    assert queue.wait(20).output == 2
    assert queue.empty()
