"""Short PythonTasks claimed with followers and run as one batch in a warm child
(worker/batch.py): each task keeps its own id, output, sandbox and result, and a crash
or a cancel in a batch costs nothing but the task it concerns."""

from __future__ import annotations

import collections
import os
import time

from conftest import drain, wait_until
from helpers_tasks import batch_probe, close_output, crash_on, my_sum, timed_sleep

import wq_redis as wq


def _warm_up(queue: wq.WorkQueue) -> None:
    """Enough short tasks for the worker to see its tasks are short and claim in batches."""
    queue.submit_many([wq.PythonTask(my_sum, i, 1) for i in range(50)])
    assert sorted(t.output for t in drain(queue, 50)) == list(range(1, 51))


def test_short_tasks_run_in_batches_each_as_its_own_task(queue, workers):
    workers.start("--cores", "1")
    _warm_up(queue)
    ids = queue.submit_many([wq.PythonTask(batch_probe, i) for i in range(300)])
    tasks = drain(queue, 300)
    by_claim = collections.Counter()
    for task in tasks:
        assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS, task.error
        i, task_id, sandbox, before = task.output
        assert ids[i] == task.id and task_id == str(task.id) and os.path.isabs(sandbox)
        assert before == []  # nothing left by the task that ran before it
        assert task.std_output == f"probe {i}\n"
        by_claim[task.execute_cmd_start] += 1  # tasks claimed together share their start
    assert max(by_claim.values()) > 1, "no two tasks were claimed (and run) as one batch"
    assert queue.stats.tasks_done == 350


def test_a_task_that_closes_its_output_does_not_silence_the_next(queue, workers):
    workers.start("--cores", "1")  # one warm child runs both
    assert queue.wait(0) is None
    queue.submit(wq.PythonTask(close_output))
    assert queue.wait(30).result == wq.WORK_QUEUE_RESULT_SUCCESS
    queue.submit(wq.PythonTask(batch_probe, 7))
    task = queue.wait(30)
    assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS, task.std_output
    assert task.std_output == "probe 7\n"


def test_a_crash_in_a_batch_fails_only_the_task_that_crashed(queue, workers):
    workers.start("--cores", "1")
    _warm_up(queue)
    ids = queue.submit_many([wq.PythonTask(crash_on, i, 20) for i in range(60)])
    tasks = {t.id: t for t in drain(queue, 60)}
    for i, task_id in enumerate(ids):
        task = tasks[task_id]
        if i == 20:
            assert task.result == wq.WORK_QUEUE_RESULT_SIGNAL or task.return_status == 3, task.result_str
        else:
            assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS and task.output == i


def test_cancelling_one_task_of_a_batch_spares_the_others(queue, workers):
    workers.start("--cores", "1")
    _warm_up(queue)
    # a slow first task, then short ones claimed with it; one of those is cancelled
    ids = queue.submit_many([wq.PythonTask(timed_sleep, 1.0)] + [wq.PythonTask(my_sum, i, 0) for i in range(30)])
    assert wait_until(lambda: queue.task_state(ids[0]) == wq.WORK_QUEUE_TASK_RUNNING)
    time.sleep(0.2)
    victim = ids[10]
    assert queue.cancel_by_taskid(victim) is not None
    tasks = drain(queue, 30, timeout=60)
    assert victim not in {t.id for t in tasks}
    assert sorted(t.output for t in tasks if t.id != ids[0]) == sorted(set(range(30)) - {9})
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in tasks)
    assert queue.wait(1) is None


def test_followers_are_capped_by_bytes_and_keep_their_order(queue, workers):
    from helpers_tasks import sized_probe

    from wq_redis.worker.loop import BATCH_BYTES

    workers.start("--cores", "1")
    _warm_up(queue)
    size = 1024 * 1024
    ids = queue.submit_many([wq.PythonTask(sized_probe, i, os.urandom(size)) for i in range(24)])
    tasks = sorted(drain(queue, 24), key=lambda t: t.execute_cmd_start)
    assert [t.id for t in tasks] == ids  # one worker, one slot: run in submit order
    per_batch = collections.Counter(t.execute_cmd_start for t in tasks)
    assert all(t.output[2] == size for t in tasks)
    # a batch stops taking followers once it holds BATCH_BYTES (the first is always taken)
    assert max(per_batch.values()) <= BATCH_BYTES // size + 1
    assert len(per_batch) < 24 or BATCH_BYTES < 2 * size  # ...but it does batch them
