"""Signed envelopes: with a shared secret nothing unsigned or altered is ever unpickled."""

from __future__ import annotations

import os
import pickle

import redis
from conftest import drain
from helpers_tasks import my_sum

import wq_redis as wq
from wq_redis.protocol.serialize import function_digest


class Boom:
    """A pickle that, once loaded, leaves a marker file: proof that it was unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_signed_tasks_run_on_a_worker_with_the_same_secret(redis_url, queue_name, workers):
    workers.start("--cores", "2", "--secret", "s3cret")
    with wq.WorkQueue(queue_name, redis_url=redis_url, secret="s3cret") as q:
        cmd = wq.Task("cat in.txt")
        cmd.specify_buffer("signed input", "in.txt")
        q.submit_many([wq.PythonTask(my_sum, 2, 3), cmd])
        done = {t.id: t for t in drain(q, 2)}
    assert sorted(str(t.output) for t in done.values()) == ["5", "signed input"]


def test_worker_with_a_secret_refuses_unsigned_tasks(queue, workers):
    workers.start("--cores", "1", "--secret", "s3cret")
    queue.submit(wq.PythonTask(my_sum, 1, 1))
    task = queue.wait(30)
    assert task.result == wq.WORK_QUEUE_RESULT_UNKNOWN
    assert "not signed" in task.error


def test_worker_refuses_tasks_signed_with_another_key(redis_url, queue_name, workers):
    workers.start("--cores", "1", "--secret", "right")
    with wq.WorkQueue(queue_name, redis_url=redis_url, secret="wrong") as q:
        q.submit(wq.PythonTask(my_sum, 1, 1))
        task = q.wait(30)
    assert task.result == wq.WORK_QUEUE_RESULT_UNKNOWN and "signed with key" in task.error


def test_altered_arguments_are_refused_before_unpickling(redis_url, queue_name, workers, tmp_path):
    marker = tmp_path / "unpickled"
    with wq.WorkQueue(queue_name, redis_url=redis_url, secret="s3cret") as q:
        task_id = q.submit(wq.PythonTask(my_sum, 1, 1))
        q._buffer.flush()  # submit() returns before its task is in Redis
        client = redis.Redis.from_url(redis_url)
        client.hset(q._store.keys.task(task_id), "args", pickle.dumps(((Boom(str(marker)), 1), {})))
        workers.start("--cores", "1", "--secret", "s3cret")
        task = q.wait(30)
    assert task.result == wq.WORK_QUEUE_RESULT_UNKNOWN and "does not verify" in task.error
    assert not marker.exists()


def test_a_function_body_that_does_not_match_its_digest_is_refused(queue, workers, redis_url, tmp_path):
    marker = tmp_path / "unpickled"
    task_id = queue.submit(wq.PythonTask(lambda: 1))
    queue._buffer.flush()  # submit() returns before its task is in Redis
    client = redis.Redis.from_url(redis_url)
    digest = function_digest({b"fn": client.hget(queue._store.keys.task(task_id), "fn")})
    client.set(queue._store.keys.function(digest), pickle.dumps(Boom(str(marker))))
    workers.start("--cores", "1")
    task = queue.wait(30)
    assert task.result == wq.WORK_QUEUE_RESULT_UNKNOWN and "does not match its digest" in task.error
    assert not marker.exists()


def test_manager_never_unpickles_an_unsigned_result(redis_url, queue_name, tmp_path):
    marker = tmp_path / "unpickled"
    with wq.WorkQueue(queue_name, redis_url=redis_url, secret="s3cret") as q:
        keys = q._store.keys
        client = redis.Redis.from_url(redis_url)
        forged = q.submit(wq.PythonTask(my_sum, 1, 2))  # the manager's own task, finished by a forger
        q._buffer.flush()
        client.hset(
            keys.task(forged),
            mapping={
                "s": 3,
                "q": "c1.m0.d0.g0|",
                "r": 0,
                "val": pickle.dumps(Boom(str(marker))),
                "spec": b'WQ\x01{"kind":"py","command":"python:x"}',
                "a": 1,
                "out": b"",
            },
        )
        client.rpush(keys.done, forged)
        task = q.wait(5)
        assert task.id == forged
        assert task.result == wq.WORK_QUEUE_RESULT_UNKNOWN and "not signed" in task.error
        assert isinstance(task.output, wq.PythonTaskNoResult)
    assert not marker.exists()


def test_local_workers_of_a_signed_queue_get_its_secret(redis_url, queue_name, monkeypatch):
    """``WorkQueue(secret=..., local_workers=N)``: the workers it starts verify its tasks (the
    secret travels in their environment, never on their command line)."""
    monkeypatch.delenv("WQ_REDIS_SECRET", raising=False)
    with wq.WorkQueue(queue_name, redis_url=redis_url, secret="s3cret", local_workers=1) as q:
        assert q.worker_environment()["WQ_REDIS_SECRET"] == "s3cret"
        q.submit(wq.PythonTask(my_sum, 20, 22))
        (task,) = drain(q, 1)
        assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS and task.output == 42
