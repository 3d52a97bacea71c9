"""The manager API against a real Redis: submit, wait, stats, state, re-attach."""

from __future__ import annotations

import time

import pytest
import redis
from conftest import drain, wait_until
from helpers_tasks import my_sum, timed_sleep

import wq_redis as wq


def test_seed_example_verbatim(redis_url, queue_name, workers):
    workers.start("--cores", "4", "--gpus", "1", queue="demo")
    queue = wq.WorkQueue("demo", redis_url=redis_url)
    task = wq.PythonTask(my_sum, 10, 20)
    task.specify_cores(4)
    task.specify_gpus(1)
    task.specify_tag("hydrazine")
    queue.submit(task)
    task = queue.wait(30)
    assert task is not None
    assert f"task {task.id} completed with result {task.output}" == f"task {task.id} completed with result 30"
    assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS
    assert task.result_str == "SUCCESS"
    assert task.tag == "hydrazine"
    assert task.resources_allocated.cores == 4 and task.resources_allocated.gpus == 1
    queue.close()


def test_submit_returns_increasing_ids(queue):
    ids = [queue.submit(wq.Task("true")) for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_submit_many_queues_all_tasks_in_one_call(queue, workers):
    ids = queue.submit_many([wq.PythonTask(my_sum, i, i) for i in range(50)])
    assert len(ids) == 50 and queue.stats.tasks_waiting == 50
    workers.start("--cores", "2")
    done = drain(queue, 50)
    assert sorted(t.id for t in done) == sorted(ids)
    assert sorted(t.output for t in done) == sorted(2 * i for i in range(50))


def test_wait_times_out_with_none_when_no_worker(queue):
    queue.submit(wq.Task("true"))
    start = time.monotonic()
    assert queue.wait(0.5) is None
    assert time.monotonic() - start >= 0.45


def test_wait_on_empty_queue_returns_none_at_once(queue):
    assert queue.empty()
    assert queue.wait(-1) is None


def test_wait_for_tag_leaves_other_tasks_for_wait(queue, workers):
    workers.start("--cores", "2")
    a = wq.PythonTask(my_sum, 1, 1)
    a.specify_tag("a")
    b = wq.PythonTask(my_sum, 2, 2)
    b.specify_tag("b")
    queue.submit_many([a, b])
    got = queue.wait_for_tag("b", 30)
    assert got is b and got.output == 4
    assert queue.wait(30) is a


def test_stats_fields_follow_the_task_lifecycle(queue, workers):
    tasks = [wq.PythonTask(timed_sleep, 1.0) for _ in range(3)]
    for task in tasks:
        task.specify_cores(1)  # (declaring nothing, each would take the whole worker)
    queue.submit_many(tasks)
    stats = queue.stats
    assert (stats.tasks_waiting, stats.tasks_submitted, stats.workers_connected) == (3, 3, 0)
    workers.start("--cores", "2", "--memory", "1000", "--disk", "1000")
    assert wait_until(lambda: queue.stats.tasks_running == 2)
    stats = queue.stats
    assert stats.workers_connected == 1 and stats.workers_busy == 1
    assert stats.total_cores == 2 and stats.committed_cores == 2
    assert stats.total_memory == 1000 and stats.total_disk == 1000
    assert stats.tasks_waiting == 1
    drain(queue, 3)
    stats = queue.stats
    assert (stats.tasks_done, stats.tasks_failed, stats.tasks_waiting, stats.tasks_running) == (3, 0, 0, 0)
    assert stats.tasks_dispatched == 3
    assert wait_until(lambda: queue.stats.workers_idle == 1)


def test_task_state_follows_the_task(queue, workers):
    task_id = queue.submit(wq.PythonTask(timed_sleep, 0.5))
    assert queue.task_state(task_id) == wq.WORK_QUEUE_TASK_READY
    workers.start("--cores", "1")
    assert wait_until(lambda: queue.task_state(task_id) == wq.WORK_QUEUE_TASK_RUNNING)
    assert wait_until(lambda: queue.task_state(task_id) == wq.WORK_QUEUE_TASK_WAITING_RETRIEVAL)
    assert queue.wait(10).id == task_id
    assert queue.task_state(task_id) == wq.WORK_QUEUE_TASK_DONE
    assert queue.task_state(999_999) == wq.WORK_QUEUE_TASK_UNKNOWN


def test_empty_and_hungry(queue, workers):
    assert queue.empty() and queue.hungry()
    queue.submit_many([wq.Task("true") for _ in range(20)])
    assert not queue.empty()
    assert not queue.hungry()  # 20 waiting, no worker to take them
    workers.start("--cores", "2")
    drain(queue, 20)
    assert queue.empty() and queue.hungry()


def test_two_workers_share_one_queue(queue, workers):
    workers.start("--cores", "1", "--name", "one")
    workers.start("--cores", "1", "--name", "two")
    queue.submit_many([wq.PythonTask(timed_sleep, 0.3) for _ in range(8)])
    done = drain(queue, 8)
    assert {t.worker.split("@")[0] for t in done} == {"one", "two"}
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in done)


def test_a_new_manager_reattaches_and_gets_results_of_the_old_one(redis_url, queue_name, workers):
    first = wq.WorkQueue(queue_name, redis_url=redis_url)
    ids = first.submit_many([wq.PythonTask(my_sum, i, 1) for i in range(5)])
    first.close()  # as if the manager process had gone away
    workers.start("--cores", "2")
    with wq.WorkQueue(queue_name, redis_url=redis_url) as second:
        done = drain(second, 5)
        assert sorted(t.id for t in done) == ids
        assert sorted(t.output for t in done) == [1, 2, 3, 4, 5]
        assert all(isinstance(t, wq.PythonTask) for t in done)
        assert second.empty()


def test_results_are_removed_from_redis_once_retrieved(queue, workers, redis_url):
    workers.start("--cores", "2")
    queue.submit_many([wq.PythonTask(my_sum, 1, 2) for _ in range(10)])
    drain(queue, 10)
    assert queue.empty()
    client = redis.Redis.from_url(redis_url)
    assert client.keys(f"wq:{{{queue.name}}}:t:*") == []


@pytest.fixture(scope="module")
def protected_server():
    from wq_redis.embedded.server import RedisServer

    server = RedisServer(password="s3cret").start()
    yield server
    server.stop()


def test_wrong_password_is_a_clear_error(protected_server):
    base = f"{protected_server.host}:{protected_server.port}/0"
    with pytest.raises(wq.RedisUnavailable, match="refused the credentials") as info:
        wq.WorkQueue("q", redis_url=f"redis://:wrong@{base}")
    assert "wrong" not in str(info.value)  # the password is never echoed
    import psutil

    assert not any("s3cret" in part for part in psutil.Process(protected_server.process.pid).cmdline())
    with pytest.raises(wq.RedisUnavailable, match=r"needs a password|refused"):
        wq.WorkQueue("q", redis_url=f"redis://{base}")


def test_password_protected_redis_works_end_to_end(protected_server, workers):
    workers.redis_url = protected_server.url
    workers.start("--cores", "1")
    with wq.WorkQueue("secure", redis_url=protected_server.url) as q:
        pass
    with wq.WorkQueue(workers.queue_name, redis_url=protected_server.url) as q:
        q.submit(wq.PythonTask(my_sum, 2, 3))
        task = q.wait(30)
        assert task is not None and task.output == 5


def test_unreachable_redis_is_a_clear_error():
    from wq_redis.embedded.server import free_port

    with pytest.raises(wq.RedisUnavailable, match="cannot reach Redis"):
        wq.WorkQueue("q", redis_url=f"redis://127.0.0.1:{free_port()}/0")


def test_work_queue_positional_port_is_accepted_and_ignored(redis_url, monkeypatch):
    monkeypatch.setenv("WQ_REDIS_URL", redis_url)
    with pytest.warns(UserWarning, match="port"):
        q = wq.WorkQueue(9123)
    assert q.name == "default"
    q.close()


def test_bad_queue_name_is_rejected(redis_url):
    with pytest.raises(ValueError, match="must not contain"):
        wq.WorkQueue("a{b}", redis_url=redis_url)


def test_flushed_script_cache_is_reloaded_transparently(queue, workers, redis_url):
    client = redis.Redis.from_url(redis_url)
    queue.submit(wq.PythonTask(my_sum, 1, 1))
    workers.start("--cores", "1")
    assert queue.wait(30).output == 2
    client.script_flush()  # as after a Redis restart: every EVALSHA answers NOSCRIPT
    queue.submit_many([wq.PythonTask(my_sum, 2, 2), wq.PythonTask(my_sum, 3, 3)])
    assert sorted(t.output for t in drain(queue, 2)) == [4, 6]
