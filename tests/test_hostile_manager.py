"""A client with write access to Redis against the manager's books (issue 14, item 2).

Strangers push ids into the done list, forge finished hashes and damage the result of
the manager's own tasks; the manager counts only its own tasks, logs and skips what is
not its own, and returns every task of its own exactly once (failed, saying why, when its
result cannot be read).  Never an exception out of ``wait`` or ``empty``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from conftest import drain
from helpers_tasks import my_sum

import wq_redis as wq
from wq_redis.client.wire import encode_task
from wq_redis.protocol.resources import Request, queue_member
from wq_redis.protocol.serialize import FunctionCache, pack_spec
from wq_redis.protocol.store import Delivery, QueueStateLost, QueueStore

FOREIGN_IDS = (990001, 990002, 990003)


def push_done(client: redis.Redis, queue: wq.WorkQueue, *ids: int) -> None:
    client.rpush(queue._store.keys.done, *ids)


def forge_finished(client: redis.Redis, queue: wq.WorkQueue, task_id: int, **fields: bytes | str) -> None:
    """A finished task's hash as a stranger writes it, and its id in the done list."""
    client.hset(queue._store.keys.task(task_id), mapping={"s": 3, "q": "c1m0d0g0|", **fields})
    push_done(client, queue, task_id)


def test_ids_pushed_into_done_by_a_stranger_do_not_make_the_queue_empty(queue, workers, redis_url):
    client = redis.Redis.from_url(redis_url)
    ids = queue.submit_many([wq.PythonTask(my_sum, i, 1) for i in range(20)])
    push_done(client, queue, *FOREIGN_IDS)  # ids without a hash
    forge_finished(client, queue, 990004, r=0)  # a finished hash nobody submitted
    assert not queue.empty()
    assert queue.wait(0.2) is None  # none of the strangers' is handed out
    workers.start("--cores", "2")
    done = drain(queue, 20)
    assert sorted(t.id for t in done) == sorted(ids)
    assert queue.empty()
    assert queue.stats.tasks_done == 20  # the strangers' are not counted as retrieved


def test_a_stranger_pushing_the_id_of_a_waiting_task_does_not_finish_it(queue, workers, redis_url):
    client = redis.Redis.from_url(redis_url)
    task_id = queue.submit(wq.PythonTask(my_sum, 2, 3))
    queue._buffer.flush()
    push_done(client, queue, task_id, task_id)
    assert queue.wait(0.2) is None
    assert not queue.empty()
    workers.start("--cores", "1")
    task = queue.wait(30)
    assert (task.id, task.result, task.output) == (task_id, wq.WORK_QUEUE_RESULT_SUCCESS, 5)
    assert queue.empty()


def test_a_foreign_hash_that_does_not_decode_is_logged_and_skipped(queue, workers, redis_url, caplog):
    client = redis.Redis.from_url(redis_url)
    forge_finished(client, queue, 990005, spec=pack_spec({"kind": "cmd"}), r=0)  # no command
    ids = queue.submit_many([wq.PythonTask(my_sum, i, 0) for i in range(5)])
    workers.start("--cores", "2")
    with caplog.at_level(logging.WARNING, logger="wq_redis.client.queue"):
        done = drain(queue, 5)
        assert queue.empty()
    assert sorted(t.id for t in done) == sorted(ids)
    assert "990005" in caplog.text and "did not submit" in caplog.text


def test_an_own_task_whose_result_is_garbage_comes_back_failed(queue, redis_url, caplog):
    client = redis.Redis.from_url(redis_url)
    task_id = queue.submit(wq.Task("true"))
    queue._buffer.flush()
    client.hset(queue._store.keys.task(task_id), mapping={"s": 3, "r": "garbage", "a": "x"})
    push_done(client, queue, task_id)
    with caplog.at_level(logging.WARNING, logger="wq_redis.client.queue"):
        task = queue.wait(5)
    assert task.id == task_id and task.result == wq.WORK_QUEUE_RESULT_UNKNOWN
    assert "cannot be read" in task.error and str(task_id) in caplog.text
    assert queue.empty()


def test_a_forged_pack_naming_own_ids_does_not_finish_them(queue, redis_url):
    from wq_redis.protocol import packing

    client = redis.Redis.from_url(redis_url)
    task_id = queue.submit(wq.PythonTask(my_sum, 1, 1))
    queue._buffer.flush()
    forge_finished(client, queue, 990006, n=1, pa=packing.dump([(task_id, b"")]), r=0)
    assert queue.wait(0.2) is None
    assert not queue.empty()
    assert queue.cancel_by_taskid(task_id).id == task_id
    assert queue.empty()


def test_a_restarted_manager_adopts_the_tasks_left_unfinished_and_no_stranger(redis_url, queue_name, workers):
    first = wq.WorkQueue(queue_name, redis_url=redis_url)
    ids = first.submit_many([wq.PythonTask(my_sum, i, 100) for i in range(10)])
    first._client.close()  # dies without a word
    client = redis.Redis.from_url(redis_url)
    client.rpush(f"wq:{{{queue_name}}}:done", *FOREIGN_IDS)
    with wq.WorkQueue(queue_name, redis_url=redis_url) as second:
        assert not second.empty()  # it waits for the first one's tasks
        workers.start("--cores", "2")
        done = drain(second, 10)
        assert sorted(t.id for t in done) == sorted(ids)
        assert sorted(t.output for t in done) == [i + 100 for i in range(10)]
        assert second.empty()


def test_a_dropped_result_says_why(queue, redis_url):
    """complete.lua tells a lost lease from a task that is gone, and from a queue whose
    state Redis lost (the worker logs the difference)."""
    client = redis.Redis.from_url(redis_url)
    store = QueueStore(client, queue.name)
    held = queue.submit(wq.Task("true"))
    queue._buffer.flush()
    result = {"r": 0}
    assert store.complete([(held, "not-its-token", result)]) == [Delivery.LEASE_LOST]
    assert store.complete([(990007, "token", result)]) == [Delivery.TASK_GONE]
    client.delete(queue._store.keys.incarnation)
    assert store.complete([(990007, "token", result)]) == [Delivery.QUEUE_LOST]
    assert not any(store.complete([(990007, "token", result)]))


def test_a_damaged_incarnation_key_makes_the_manager_resubmit_not_fail(queue, workers, redis_url):
    client = redis.Redis.from_url(redis_url)
    ids = queue.submit_many([wq.PythonTask(my_sum, i, 0) for i in range(5)])
    client.delete(queue._store.keys.incarnation)
    client.hset(queue._store.keys.incarnation, "x", 1)  # the wrong type
    assert not queue.empty()  # resubmitted: the tasks, already there, are not queued twice
    workers.start("--cores", "2")
    assert sorted(t.id for t in drain(queue, 5)) == sorted(ids)
    assert queue.empty()
    assert queue.stats.tasks_submitted == 5


def _next_ids(client: redis.Redis, queue: wq.WorkQueue, count: int) -> list[int]:
    """The ids a manager that has reserved none yet hands out next (ids come in blocks
    from the queue's ``seq`` counter)."""
    seq = int(client.get(queue._store.keys.seq) or 0)
    return [seq + 1 + i for i in range(count)]


def plant_hashes(client: redis.Redis, queue: wq.WorkQueue, ids: list[int]) -> None:
    """What a stranger writes at the ids the manager is about to use: hashes in every
    state, random fields (a pack's, a finished result, a large field it names), and keys
    of the wrong type."""
    k = queue._store.keys
    plants: list[Any] = [
        {"s": 1},
        {"s": 2, "tok": "stolen", "w": "ghost"},
        {"s": 3, "r": 0, "val": b"\x80garbage"},
        {"zz": "random", "n": 2, "pa": b"junk", "big": "args\nextra"},
        "a string",
        ["a", "list"],
        {"s": 1, "sub": "12345", "spec": pack_spec({"kind": "cmd", "command": "echo planted"})},
    ]
    for task_id, plant in zip(ids, plants):
        key = k.task(task_id)
        if isinstance(plant, dict):
            client.hset(key, mapping=plant)
        elif isinstance(plant, list):
            client.rpush(key, *plant)
        else:
            client.set(key, plant)
    client.set(k.big_field(ids[3], "extra"), b"a stranger's large field")


def test_hashes_planted_at_the_next_ids_are_replaced_and_every_task_comes_back(queue, workers, redis_url, caplog):
    client = redis.Redis.from_url(redis_url)
    ids = _next_ids(client, queue, 7)
    plant_hashes(client, queue, ids)
    with caplog.at_level(logging.WARNING, logger="wq_redis.client.queue"):
        submitted = queue.submit_many([wq.PythonTask(my_sum, i, 10) for i in range(4)] + [wq.Task("echo own")])
        submitted += [queue.submit(wq.PythonTask(my_sum, i, 20)) for i in range(2)]  # through the buffer
        queue._buffer.flush()
    assert submitted == ids
    assert f"{ids[0]}, {ids[1]}" in caplog.text and "did not write" in caplog.text
    assert not client.exists(queue._store.keys.big_field(ids[3], "extra"))  # the stranger's large field went too
    workers.start("--cores", "2")
    done = drain(queue, 7)
    assert sorted(t.id for t in done) == ids  # each once
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in done), [t.error for t in done]
    assert [t.output for t in sorted(done, key=lambda t: t.id)] == [10, 11, 12, 13, "own\n", 20, 21]
    assert queue.empty()


def test_a_re_sent_submit_call_queues_its_tasks_once(queue, redis_url):
    client = redis.Redis.from_url(redis_url)
    store = QueueStore(client, queue.name)
    task_id = _next_ids(client, queue, 1)[0] + 100
    fields, _ = encode_task(wq.Task("echo once"), FunctionCache())
    row = (task_id, queue_member(Request(), None), 0.0, fields)
    first = store.submit([row], queue._incarnation)
    again = store.submit([row], queue._incarnation)  # a reply lost on the wire, the call sent again
    assert (first.queued, again.queued, again.replaced) == (1, 0, [])
    k = queue._store.keys
    assert client.lrange(k.fifo(row[1]), 0, -1) == [str(task_id).encode()]
    assert int(client.hget(k.stats, "submitted")) == 1


def test_a_submit_in_another_incarnation_queues_nothing(queue, redis_url):
    client = redis.Redis.from_url(redis_url)
    store = QueueStore(client, queue.name)
    fields, _ = encode_task(wq.Task("echo never"), FunctionCache())
    row = (990008, queue_member(Request(), None), 0.0, fields)
    for incarnation in ("another", ""):
        with pytest.raises(QueueStateLost):
            store.submit([row], incarnation)
    assert not client.exists(queue._store.keys.task(990008))
    assert not client.exists(queue._store.keys.fifo(row[1]))


def test_ids_reserved_after_the_counter_went_back_never_repeat_an_id_held(queue, redis_url):
    """The id counter set back (by another client, or lost with Redis' data before the
    manager noticed): the next block still starts above every id the manager holds."""
    client = redis.Redis.from_url(redis_url)
    first = queue.submit_many([wq.Task("true")])  # reserves a block of ids
    client.set(queue._store.keys.seq, 0)
    ids = queue.submit_many([wq.Task("true") for _ in range(1100)])  # runs past the block: a new one is reserved
    assert len(set(first + ids)) == 1101 and min(ids) > first[0]
    assert int(client.hget(queue._store.keys.stats, "submitted")) == 1101
