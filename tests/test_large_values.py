"""Large arguments and return values (over store.BIG_VALUE) never pass through a Lua
script: a large argument is a string key beside its task's hash that the worker GETs
after its claim, a large return value is stored under its own key beside the result,
and those keys end with their task."""

from __future__ import annotations

import os

import redis
from conftest import drain
from helpers_tasks import reversed_bytes

import wq_redis as wq
from wq_redis.protocol.serialize import pickle_arguments
from wq_redis.protocol.store import BIG_VALUE, Delivery, QueueStore

MIB = 1024 * 1024


def _kinds(client: redis.Redis, name: str) -> set[str]:
    return {k.decode().split(":", 2)[2].split(":")[0] for k in client.keys(f"wq:{{{name}}}:*")}


def test_large_arguments_and_results_arrive_intact_and_leave_nothing(queue, workers, redis_url):
    client = redis.Redis.from_url(redis_url)
    workers.start("--cores", "1")
    workers.start("--cores", "1")
    payloads = [os.urandom(MIB + i) for i in range(12)] + [os.urandom(100) for _ in range(12)]
    ids = queue.submit_many([wq.PythonTask(reversed_bytes, p) for p in payloads])
    tasks = {t.id: t for t in drain(queue, len(ids))}
    for task_id, payload in zip(ids, payloads):
        assert tasks[task_id].result == wq.WORK_QUEUE_RESULT_SUCCESS, tasks[task_id].error
        assert tasks[task_id].output == payload[::-1]
    assert queue.empty()
    assert "v" not in _kinds(client, queue.name) and "t" not in _kinds(client, queue.name)


def test_a_kept_result_keeps_its_large_value_for_the_same_time(redis_url, queue_name, workers):
    client = redis.Redis.from_url(redis_url)
    workers.start("--cores", "1")
    with wq.WorkQueue(queue_name, redis_url=redis_url, keep_results=60) as queue:
        payload = os.urandom(2 * BIG_VALUE)
        task_id = queue.submit(wq.PythonTask(reversed_bytes, payload))
        assert queue.wait(30).output == payload[::-1]
        assert queue.empty()
        value_key = client.hget(queue._store.keys.task(task_id), "vk")
        assert value_key is not None and 0 < client.ttl(value_key) <= 60
        assert 0 < client.ttl(queue._store.keys.big_field(task_id, "args")) <= 60  # the argument too


def test_a_refused_result_takes_its_large_value_with_it(redis_url, queue_name):
    client = redis.Redis.from_url(redis_url)
    with wq.WorkQueue(queue_name, redis_url=redis_url) as queue:
        task_id = queue.submit(wq.PythonTask(reversed_bytes, b"x"))
        queue._buffer.flush()  # submit() returns before its task is in Redis
        store = QueueStore(client, queue_name)
        free = {"cores": 1, "memory": 1024, "disk": 1024, "gpus": 0}
        claimed, _, _ = store.claim("w@test", free, [], max_tasks=1, lease_ms=30_000, token_prefix="s1")
        assert [c.task_id for c in claimed] == [task_id]
        big = {"r": 0, "val": b"y" * (BIG_VALUE + 1)}
        # an attempt that lost its lease (another token): refused, its value key deleted
        assert store.complete([(task_id, "s0:1:1", big)]) == [Delivery.LEASE_LOST]
        assert "v" not in _kinds(client, queue_name)
        assert store.complete([(task_id, claimed[0].token, big)]) == [Delivery.RECORDED]
        assert client.exists(queue._store.keys.value(claimed[0].token)) == 1
        assert queue.stats.tasks_late_results == 1


def test_a_large_argument_is_written_beside_the_script_and_kept(redis_url, queue_name):
    client = redis.Redis.from_url(redis_url)
    with wq.WorkQueue(queue_name, redis_url=redis_url) as queue:
        payload = os.urandom(BIG_VALUE + 1)
        task_id = queue.submit_many([wq.PythonTask(reversed_bytes, payload)])[0]
        key = queue._store.keys.task(task_id)
        assert client.hget(key, "big") == b"args" and client.hget(key, "s") == b"1"
        assert not client.hexists(key, "args")  # beside the hash, not in it
        args_key = queue._store.keys.big_field(task_id, "args")
        assert client.strlen(args_key) > BIG_VALUE
        assert client.ttl(args_key) == -1  # the submit script adopted it: no orphan TTL left
        store = QueueStore(client, queue_name)
        free = {"cores": 1, "memory": 1024, "disk": 1024, "gpus": 0}
        claimed, _, _ = store.claim("w@test", free, [], max_tasks=1, lease_ms=30_000, token_prefix="s1")
        assert b"big" not in claimed[0].fields
        assert pickle_arguments((payload,), {}) == claimed[0].fields[b"args"]


def test_a_cancelled_task_takes_its_large_argument_with_it(queue, redis_url):
    client = redis.Redis.from_url(redis_url)
    task_id = queue.submit(wq.PythonTask(reversed_bytes, os.urandom(BIG_VALUE + 1)))
    queue._buffer.flush()  # submit() returns before its task is in Redis
    assert client.exists(queue._store.keys.big_field(task_id, "args")) == 1
    assert queue.cancel_by_taskid(task_id).id == task_id
    assert "t" not in _kinds(client, queue.name)  # neither the hash nor the argument's key


def test_a_large_value_is_handed_to_the_socket_without_a_copy():
    from wq_redis.protocol.store import CommandPacker

    packer = CommandPacker()
    value = memoryview(os.urandom(BIG_VALUE + 1))  # as a worker's child sent it
    chunks = packer.pack("SET", "k", value, "EX", 60)
    assert any(chunk is value for chunk in chunks)
    assert packer.pack("SET", "lock", 1, "NX", "PX", 500) == [
        b"*6\r\n$3\r\nSET\r\n$4\r\nlock\r\n$1\r\n1\r\n$2\r\nNX\r\n$2\r\nPX\r\n$3\r\n500\r\n"
    ]
    small = packer.pack("SET", "k", b"v", "EX", 60)  # the usual command: hiredis, one buffer
    assert small == [b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$2\r\n60\r\n"]
    expected = b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$2\r\n60\r\n" % (len(value), bytes(value))
    assert b"".join(bytes(c) for c in chunks) == expected
