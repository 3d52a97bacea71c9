"""Categories: resources for tasks that declare none, stats_category, cancel_by_category."""

from __future__ import annotations

import json

import redis
from conftest import drain, wait_until
from everyday_tasks import cores_seen, nap

import wq_redis as wq
from wq_redis.protocol.keys import QueueKeys


def _task(category: str | None = None, func=cores_seen, *args) -> wq.PythonTask:
    task = wq.PythonTask(func, *args)
    if category:
        task.specify_category(category)
    return task


def _given(task: wq.Task) -> tuple:
    r = task.resources_allocated
    return (r.cores, r.memory, r.disk, r.gpus)


def test_a_task_that_declares_nothing_gets_its_categorys_resources(queue, workers):
    queue.specify_category_max_resources("wide", {"cores": 2, "memory": 300})
    wide, declared = _task("wide"), _task("wide")
    declared.specify_cores(1)
    workers.start("--cores", "4", "--memory", "2000", "--disk", "4000")
    queue.submit_many([wide, declared])
    drain(queue, 2)
    # Work Queue's proportional resources: 2 of 4 cores is half the worker, so half of
    # its memory (more than the category's 300) and of its disk
    assert wide.output == "2" and _given(wide) == (2, 1000, 2000, 0)
    assert declared.output == "1" and _given(declared) == (1, 500, 1000, 0)  # its own value wins


def test_whole_tasks_round_the_share_so_that_a_whole_number_of_tasks_fit(queue, workers):
    three = _task()
    three.specify_cores(3)  # three quarters: only one such task fits, so it gets the whole worker
    workers.start("--cores", "4", "--memory", "2000", "--disk", "4000")
    queue.submit(three)
    drain(queue, 1)
    assert _given(three) == (4, 2000, 4000, 0)
    queue.tune("proportional-whole-tasks", 0)
    exact = _task()
    exact.specify_cores(3)
    queue.submit(exact)
    drain(queue, 1)
    assert _given(exact) == (3, 1500, 3000, 0)
    queue.tune("force-proportional-resources", 0)  # what it left unset: the whole worker's
    alone = _task()
    alone.specify_cores(3)
    queue.submit(alone)
    drain(queue, 1)
    assert _given(alone) == (3, 2000, 4000, 0)


def test_a_category_minimum_raises_what_a_task_is_given(queue, workers):
    queue.specify_category_max_resources("m", {"memory": 1000})
    queue.specify_category_min_resources("m", {"cores": 3, "gpus": 2})
    workers.start("--cores", "4", "--memory", "2000", "--disk", "2000", "--gpus", "2")
    task = _task("m")
    queue.submit(task)
    drain(queue, 1)
    assert _given(task) == (3, 1000, 1000, 2)


def test_the_default_category_covers_tasks_without_a_category(queue, workers):
    queue.specify_max_resources({"cores": 2})
    plain, other = _task(), _task("other")
    workers.start("--cores", "4")
    queue.submit_many([plain, other])
    drain(queue, 2)
    assert plain.output == "2" and plain.category == "default"
    assert other.output == "4"  # as in Work Queue, another category does not fall back to it: the whole worker


def test_declared_categories_are_published_for_status(queue, redis_url, queue_name):
    queue.specify_category_max_resources("gpu", {"gpus": 1, "cores": 1})
    stored = redis.Redis.from_url(redis_url).hget(QueueKeys(queue_name).categories, "gpu")
    assert json.loads(stored) == {"gpus": 1, "cores": 1}


def test_stats_category_counts_the_tasks_of_one_category(queue, workers):
    queue.submit_many([_task("a") for _ in range(3)] + [_task("b") for _ in range(2)])
    a = queue.stats_category("a")
    assert (a.tasks_submitted, a.tasks_waiting, a.tasks_running, a.tasks_done) == (3, 3, 0, 0)
    assert queue.stats_category("b").tasks_waiting == 2
    workers.start("--cores", "2")
    drain(queue, 5)
    a = queue.stats_category("a")
    assert (a.tasks_waiting, a.tasks_done, a.tasks_failed) == (0, 3, 0)
    assert queue.stats_category("never").tasks_submitted == 0


def test_stats_category_sees_running_tasks_and_their_resources(queue, workers):
    queue.specify_category_max_resources("slow", {"cores": 2})
    queue.submit(_task("slow", nap, 2.0))
    workers.start("--cores", "2")
    assert wait_until(lambda: queue.stats_category("slow").tasks_running == 1)
    assert queue.stats_category("slow").committed_cores == 2


def test_cancel_by_category_cancels_only_that_category(queue, workers):
    queue.submit_many([_task("doomed") for _ in range(3)] + [_task("kept") for _ in range(2)])
    cancelled = queue.cancel_by_category("doomed")
    assert sorted(t.category for t in cancelled) == ["doomed"] * 3
    assert queue.stats.tasks_cancelled == 3 and queue.stats.tasks_waiting == 2
    assert queue.stats_category("doomed").tasks_cancelled == 3
    workers.start("--cores", "2")
    assert {t.category for t in drain(queue, 2)} == {"kept"}


def test_every_work_queue_allocation_mode_is_taken_and_an_unknown_one_is_refused(queue):
    """Work Queue's mode constants (category.h's values) and its answers (1, or 0)."""
    assert (wq.WORK_QUEUE_ALLOCATION_MODE_FIXED, wq.WORK_QUEUE_ALLOCATION_MODE_MAX) == (0, 1)
    assert wq.WORK_QUEUE_ALLOCATION_MODE_QUANTIZED_BUCKETING == 8
    for mode in range(9):
        assert queue.specify_category_mode("c", mode) == 1
    assert queue.specify_category_mode(None, wq.WORK_QUEUE_ALLOCATION_MODE_MAX) == 1
    assert queue.specify_category_mode("c", 42) == 0
