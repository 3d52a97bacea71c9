"""A client with write access to Redis never gets a worker or a manager with a secret to
unpickle what the manager did not sign: one test per place where bytes are unpickled.

Each hostile pickle, once loaded, would create a marker file (``Boom``): its absence after
the worker processed the task proves it was never loaded.  The tampered task must come back
to the manager failed with a clear error, and the worker must still be alive.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterator

import pytest
import redis
from conftest import wait_until
from helpers_tasks import no_arguments, reversed_bytes, unpickle_file

import wq_redis as wq
from wq_redis.protocol import packing
from wq_redis.protocol.serialize import function_digest

SECRET = "s3cret"
LARGE = 200_000  # over store.BIG_VALUE: kept beside the task's hash, not in it


class Boom:
    """A pickle that, once loaded, leaves a marker file: proof that it was unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_arguments(marker: str) -> bytes:
    return pickle.dumps(((Boom(marker),), {}))


@pytest.fixture
def signed(redis_url: str, queue_name: str) -> Iterator[wq.WorkQueue]:
    with wq.WorkQueue(queue_name, redis_url=redis_url, secret=SECRET) as q:
        yield q


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def marker(tmp_path) -> str:
    return str(tmp_path / "unpickled")


def submitted(q: wq.WorkQueue, task: wq.Task) -> int:
    """Submit ``task`` and make sure its hash is in Redis (submit returns before)."""
    task_id = q.submit(task)
    q._buffer.flush()
    return task_id


def refused(q: wq.WorkQueue, task_id: int, worker, marker: str, *words: str) -> wq.Task:
    """The task came back failed with an error naming ``words``; nothing was unpickled and
    the worker (if any) lives on."""
    task = q.wait(60)
    assert task is not None and task.id == task_id
    assert task.result != wq.WORK_QUEUE_RESULT_SUCCESS
    assert isinstance(task.output, wq.PythonTaskNoResult)
    for word in words:
        assert word in task.error
    assert not os.path.exists(marker)
    if worker is not None:
        assert worker.poll() is None
    return task


def alter_into_pack(client: redis.Redis, q: wq.WorkQueue, task_id: int, member_args: bytes) -> None:
    """What the attack of issue 14 did: a signed task with no arguments becomes a pack of
    one member whose arguments are the attacker's."""
    client.hset(q._store.keys.task(task_id), mapping={"n": 1, "pa": packing.dump([(task_id, member_args)])})


@pytest.mark.parametrize("cores", ["1", "2"])  # one slot: the main thread runs it; two: a runner thread
def test_pack_member_arguments_written_into_a_signed_task_are_never_unpickled(signed, client, workers, marker, cores):
    task_id = submitted(signed, wq.PythonTask(no_arguments))
    alter_into_pack(client, signed, task_id, hostile_arguments(marker))
    worker = workers.start("--cores", cores, "--secret", SECRET)
    refused(signed, task_id, worker, marker, "refused", "does not verify")


def test_an_idle_one_slot_worker_with_a_secret_checks_what_its_warm_child_would_claim(
    signed, workers, marker, monkeypatch
):
    # Without a secret an idle one-slot worker's warm child claims and runs quick tasks
    # itself (worker/lane.py) and holds no key: with one, the worker must claim them.
    worker = workers.start("--cores", "1", "--secret", SECRET)
    submitted(signed, wq.PythonTask(no_arguments))
    assert signed.wait(60).output == "ran"  # the worker is idle now, waiting for the next task
    sign_row = signed._row

    def altered_after_signing(*args):  # as if changed in Redis before any worker claimed it
        row = sign_row(*args)
        row[3]["args"] = hostile_arguments(marker)
        return row

    monkeypatch.setattr(signed, "_row", altered_after_signing)
    task_id = submitted(signed, wq.PythonTask(no_arguments))
    refused(signed, task_id, worker, marker, "refused", "does not verify")


def test_manager_with_a_secret_never_reads_pack_results(signed, client, marker):
    task_id = submitted(signed, wq.PythonTask(no_arguments))
    forged = {b"r": b"0", b"val": pickle.dumps(Boom(marker))}
    client.hset(
        signed._store.keys.task(task_id),
        mapping={"s": 3, "n": 1, "pa": packing.dump([(task_id, b"")]), "pr": packing.dump([(task_id, forged)])},
    )
    client.rpush(signed._store.keys.done, task_id)
    refused(signed, task_id, None, marker, "refused", "pack of tasks", "not unpickled")


def test_large_arguments_replaced_beside_the_hash_are_refused(signed, client, workers, marker):
    task_id = submitted(signed, wq.PythonTask(reversed_bytes, b"x" * LARGE))
    big = signed._store.keys.big_field(task_id, "args")
    assert client.exists(big)
    client.set(big, hostile_arguments(marker))
    worker = workers.start("--cores", "2", "--secret", SECRET)
    refused(signed, task_id, worker, marker, "refused", "does not verify")


def test_large_arguments_added_beside_a_hash_that_had_none_are_refused(signed, client, workers, marker):
    task_id = submitted(signed, wq.PythonTask(no_arguments))
    keys = signed._store.keys
    client.set(keys.big_field(task_id, "args"), hostile_arguments(marker))
    client.hset(keys.task(task_id), "big", "args")
    worker = workers.start("--cores", "1", "--secret", SECRET)
    refused(signed, task_id, worker, marker, "refused", "does not verify")


def test_a_large_return_value_replaced_beside_the_hash_is_refused_by_the_manager(signed, client, workers, marker):
    worker = workers.start("--cores", "1", "--secret", SECRET)
    task_id = submitted(signed, wq.PythonTask(reversed_bytes, b"y" * LARGE))
    key = signed._store.keys.task(task_id)
    assert wait_until(lambda: client.hget(key, "vk") is not None, timeout=30)
    client.set(client.hget(key, "vk"), pickle.dumps(Boom(marker)))
    refused(signed, task_id, worker, marker, "result signature does not verify")


def test_a_cached_input_file_replaced_in_redis_is_refused(signed, client, workers, marker):
    content = pickle.dumps("the input")
    task = wq.PythonTask(unpickle_file, "data.pkl")
    task.specify_buffer(content, "data.pkl", cache=True)
    task_id = submitted(signed, task)
    client.set(signed._store.keys.file(hashlib.sha256(content).hexdigest()), pickle.dumps(Boom(marker)))
    worker = workers.start("--cores", "1", "--secret", SECRET)
    task = refused(signed, task_id, worker, marker, "corrupted")
    assert task.result == wq.WORK_QUEUE_RESULT_INPUT_MISSING


def test_a_large_inline_input_file_replaced_beside_the_hash_is_refused(signed, client, workers, marker):
    task = wq.PythonTask(unpickle_file, "data.pkl")
    task.specify_buffer(pickle.dumps("the input") + b"\0" * LARGE, "data.pkl")  # pickle.load stops at STOP
    task_id = submitted(signed, task)
    big = signed._store.keys.big_field(task_id, "in:data.pkl")
    assert client.exists(big)
    client.set(big, pickle.dumps(Boom(marker)))
    worker = workers.start("--cores", "1", "--secret", SECRET)
    refused(signed, task_id, worker, marker, "refused", "does not verify")


def test_a_function_body_swapped_under_its_digest_is_refused(signed, client, workers, marker):
    task_id = submitted(signed, wq.PythonTask(lambda: 1))
    digest = function_digest({b"fn": client.hget(signed._store.keys.task(task_id), "fn")})
    client.set(signed._store.keys.function(digest), pickle.dumps(Boom(marker)))
    worker = workers.start("--cores", "2", "--secret", SECRET)
    refused(signed, task_id, worker, marker, "refused", "does not match its digest")


def test_a_task_pointed_at_another_function_is_refused(signed, client, workers, marker):
    task_id = submitted(signed, wq.PythonTask(no_arguments))
    body = pickle.dumps(Boom(marker))
    digest = hashlib.sha256(body).hexdigest()
    client.set(signed._store.keys.function(digest), body)  # a body that matches its own digest
    client.hset(signed._store.keys.task(task_id), "fn", bytes.fromhex(digest))
    worker = workers.start("--cores", "1", "--secret", SECRET)
    refused(signed, task_id, worker, marker, "refused", "does not verify")


def test_cancelling_a_task_altered_into_a_pack_reads_no_members(signed, client, marker):
    task_id = submitted(signed, wq.PythonTask(no_arguments))
    client.hset(
        signed._store.keys.task(task_id),
        mapping={"n": 2, "pa": packing.dump([(task_id, b""), (task_id + 1000, hostile_arguments(marker))])},
    )
    cancelled = signed.cancel_by_taskid(task_id)
    assert cancelled is not None and cancelled.id == task_id
    assert signed._books.cancelled == {task_id}  # not the stranger's member id
    assert not os.path.exists(marker)


def test_signed_tasks_with_large_arguments_and_results_still_run(signed, workers):
    workers.start("--cores", "2", "--secret", SECRET)
    payload = bytes(range(256)) * (LARGE // 256)
    task_id = submitted(signed, wq.PythonTask(reversed_bytes, payload))
    task = signed.wait(60)
    assert task is not None and task.id == task_id
    assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS and task.output == payload[::-1]


def test_a_signed_task_replayed_from_another_queue_with_the_same_secret_is_refused(
    signed, client, workers, redis_url, marker
):
    from helpers_tasks import my_sum

    with wq.WorkQueue(signed.name + "-other", redis_url=redis_url, secret=SECRET) as other:
        foreign_id = submitted(other, wq.PythonTask(my_sum, 1, 2))  # nobody serves that queue
        task_id = submitted(signed, wq.PythonTask(my_sum, 10, 20))
        assert foreign_id == task_id  # both queues hand out ids from 1: the replay targets the same id
        copied = client.hmget(other._store.keys.task(foreign_id), "spec", "fn", "args", "sig")
        client.hset(
            signed._store.keys.task(task_id),
            mapping={name: value for name, value in zip(("spec", "fn", "args", "sig"), copied) if value},
        )
        worker = workers.start("--cores", "2", "--secret", SECRET)
        task = refused(signed, task_id, worker, marker, "refused", "signature")
        assert task.output != 3
