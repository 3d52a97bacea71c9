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


def test_a_task_that_declares_nothing_gets_its_categorys_resources(queue, workers):
    queue.specify_category_max_resources("wide", {"cores": 3, "memory": 300})
    wide, declared = _task("wide"), _task("wide")
    declared.specify_cores(1)
    workers.start("--cores", "4", "--memory", "2000")
    queue.submit_many([wide, declared])
    drain(queue, 2)
    assert wide.output == "3" and wide.resources_allocated.cores == 3 and wide.resources_allocated.memory == 384
    assert declared.output == "1"  # what a task declares wins over its category


def test_the_default_category_covers_tasks_without_a_category(queue, workers):
    queue.specify_max_resources({"cores": 2})
    plain, other = _task(), _task("other")
    workers.start("--cores", "4")
    queue.submit_many([plain, other])
    drain(queue, 2)
    assert plain.output == "2" and plain.category == "default"
    assert other.output == "2"  # a category without its own resources falls back to the default's


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


def test_the_fixed_allocation_mode_is_taken_silently_and_the_others_warn(queue):
    """Work Queue's mode constants (category.h's values); only FIXED is given for now."""
    import warnings

    import pytest

    assert (wq.WORK_QUEUE_ALLOCATION_MODE_FIXED, wq.WORK_QUEUE_ALLOCATION_MODE_MAX) == (0, 1)
    assert wq.WORK_QUEUE_ALLOCATION_MODE_QUANTIZED_BUCKETING == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        queue.specify_category_mode("c", wq.WORK_QUEUE_ALLOCATION_MODE_FIXED)
        queue.specify_category_mode(None, wq.WORK_QUEUE_ALLOCATION_MODE_FIXED)
    with pytest.warns(UserWarning, match=r"only the FIXED category mode \(0\), not 1"):
        queue.specify_category_mode("c", wq.WORK_QUEUE_ALLOCATION_MODE_MAX)
