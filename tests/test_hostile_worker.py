"""Another client with write access writes garbage where a worker reads: the worker goes on.

Garbage in a claimed task hash fails that task alone, with an error that says what is
wrong, and never ends the worker or the tasks claimed with it; a key of the wrong type
where a worker writes results (done, leases) holds those results, changes nothing,
and they arrive once the key is repaired; a worker's own record of the wrong type is
replaced.  Real Redis, real worker processes (1 core: its warm child's lane claims;
2 cores: the main process claims).  Found by tests/test_hostile_fuzz.py.
"""

from __future__ import annotations

import contextlib
import pickle
import socket
import subprocess
import time
from collections.abc import Iterator

import psutil
import pytest
import redis
from conftest import drain, wait_until
from helpers_tasks import my_sum
from test_hostile_queues import start_logged_worker

import wq_redis as wq
from wq_redis.protocol.serialize import digest_pickle


def warm_up(queue: wq.WorkQueue) -> None:
    """Quick tasks first: the worker learns their pace and then claims the next tasks of
    the queue together, as one group (a task and its followers), as a busy worker does."""
    queue.submit_many([wq.PythonTask(my_sum, i, 0) for i in range(40)])
    assert sorted(t.output for t in drain(queue, 40, timeout=60)) == list(range(40))


def task_key(queue: wq.WorkQueue, task_id: int) -> str:
    return f"wq:{{{queue.name}}}:t:{task_id}"


def submitted(queue: wq.WorkQueue, tasks: list[wq.Task]) -> list[int]:
    ids = queue.submit_many(tasks)
    queue._buffer.flush()
    return ids


@contextlib.contextmanager
def claims_held(client: redis.Redis, worker: subprocess.Popen[bytes]) -> Iterator[None]:
    """No claim of ``worker`` runs inside the block: it and its children (the warm child of
    a 1-core worker claims too) are stopped (SIGSTOP), and the claims they left waiting in
    Redis are let go at once.  An idle worker sends a BLPOP on wake keys with its claim
    script behind it in one pipeline, which Redis runs by itself when a key is rung: each
    such blocked client is unblocked (CLIENT UNBLOCK: the BLPOP times out, the claim
    finds nothing) until none has been blocked for a while."""
    tree = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
    for process in tree:
        process.suspend()
    try:
        quiet = 0
        while quiet < 3:
            blocked = [c["id"] for c in client.client_list() if "b" in c["flags"]]
            for client_id in blocked:
                client.client_unblock(client_id)
            quiet = 0 if blocked else quiet + 1
            time.sleep(0.05)
        yield
    finally:
        for process in tree:
            process.resume()


def tampered(
    redis_url: str,
    queue: wq.WorkQueue,
    worker: subprocess.Popen[bytes],
    tasks: list[wq.Task],
    writes: dict[int, dict[str, bytes | int]],
) -> tuple[wq.WorkQueue, list[int]]:
    """A fresh manager of the queue submits ``tasks``, and their hashes get ``writes`` (by
    task index) before ``worker`` claims them (``claims_held``): written after the submit,
    because submit.lua replaces a hash it did not write.  A fresh manager takes the next
    ids of the counter and packs nothing (it knows no function's pace)."""
    client = redis.Redis.from_url(redis_url)
    try:
        with claims_held(client, worker):
            fresh = wq.WorkQueue(queue.name, redis_url=redis_url)
            ids = submitted(fresh, tasks)
            for index, fields in writes.items():
                client.hset(task_key(queue, ids[index]), mapping=fields)
    finally:
        client.close()
    return fresh, ids


def recorded(redis_url: str, queue: wq.WorkQueue, ids: list[int], timeout: float = 60.0) -> list[dict[bytes, bytes]]:
    """The hashes of ``ids`` once a worker recorded every one's result (state 3), as the
    worker wrote them: read from Redis, so that what the manager makes of a hash another
    client wrote into is not what these tests look at."""
    client = redis.Redis.from_url(redis_url)
    assert wait_until(lambda: all(client.hget(task_key(queue, i), "s") == b"3" for i in ids), timeout)
    return [client.hgetall(task_key(queue, i)) for i in ids]


def value(fields: dict[bytes, bytes]) -> object:
    """A PythonTask's return value as the worker recorded it (the tests' own tasks)."""
    return pickle.loads(fields[b"val"])


def back(manager: wq.WorkQueue, ids: list[int], timeout: float = 60.0) -> dict[int, wq.Task]:
    """``ids``' tasks as they come back, by id, then the manager closed.  (A fresh manager
    of a queue re-attaches to the results another one had taken and not finished reading:
    those are not these tests' business.)"""
    found: dict[int, wq.Task] = {}
    deadline = time.monotonic() + timeout
    while set(ids) - set(found):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"tasks {sorted(set(ids) - set(found))} did not come back in {timeout} s"
        task = manager.wait(remaining)
        if task is not None and task.id in ids:
            found[task.id] = task
    manager.close()
    return found


@pytest.mark.parametrize("cores", ["1", "2"])
@pytest.mark.parametrize("count", [b">", b"abc", pickle.dumps([1]), b"1e309", b"-1"])
def test_a_pack_count_that_is_not_a_number_fails_that_task_alone(redis_url, queue, workers, cores, count):
    process = workers.start("--cores", cores)
    warm_up(queue)
    # claimed as a pack whose count cannot be read
    fresh, ids = tampered(
        redis_url,
        queue,
        process,
        [wq.PythonTask(my_sum, 1, 2), wq.Task("echo fine"), wq.PythonTask(my_sum, 3, 4)],
        {0: {"n": count}},
    )
    tampered_task, command, call = recorded(redis_url, queue, ids)
    fresh.close()
    assert tampered_task[b"r"] == b"32" and b"unreadable task hash" in tampered_task[b"err"], tampered_task.get(b"err")
    assert b"field n " in tampered_task[b"err"]
    assert command[b"r"] == b"0" and command[b"out"] == b"fine\n" and value(call) == 7
    assert process.poll() is None


@pytest.mark.parametrize("cores", ["1", "2"])
def test_a_cancelled_count_that_is_not_a_number_does_not_stop_the_results_of_others(redis_url, queue, workers, cores):
    process = workers.start("--cores", cores)
    warm_up(queue)
    # complete.lua reads nc to count a pack's members
    fresh, ids = tampered(
        redis_url,
        queue,
        process,
        [wq.PythonTask(my_sum, 1, 2), wq.Task("echo fine"), wq.PythonTask(my_sum, 3, 4)],
        {0: {"nc": b"a\nb"}},
    )
    _, command, call = recorded(redis_url, queue, ids)
    fresh.close()
    assert command[b"out"] == b"fine\n" and value(call) == 7
    assert process.poll() is None


@pytest.mark.parametrize("cores", ["1", "2"])
def test_a_pack_whose_members_do_not_load_fails_alone(redis_url, queue, workers, cores):
    process = workers.start("--cores", cores)
    warm_up(queue)
    # the first: a pack without its members (no pa at all)
    fresh, ids = tampered(
        redis_url,
        queue,
        process,
        [wq.PythonTask(my_sum, 1, 2), wq.Task("echo fine"), wq.PythonTask(my_sum, 3, 4)],
        {0: {"n": 2}, 2: {"n": 1, "pa": b"\x80\x05garbage"}},
    )
    no_members, command, garbage_members = recorded(redis_url, queue, ids)
    fresh.close()
    for fields in (no_members, garbage_members):
        assert fields[b"r"] == b"32" and b"unreadable task hash" in fields[b"err"] and b"field pa" in fields[b"err"]
    assert command[b"out"] == b"fine\n"
    assert process.poll() is None


@pytest.mark.parametrize("cores", ["1", "2"])
def test_a_large_field_named_in_bytes_that_are_not_text_does_not_stop_the_worker(redis_url, queue, workers, cores):
    process = workers.start("--cores", cores)
    warm_up(queue)
    fresh, ids = tampered(
        redis_url,
        queue,
        process,
        [wq.PythonTask(my_sum, 1, 2), wq.Task("echo fine")],
        {0: {"big": b"\xb7\xc32\x11\n\x80\x05"}},
    )
    tasks = back(fresh, ids)
    assert tasks[ids[1]].output == "fine\n"
    assert process.poll() is None


@pytest.mark.parametrize("cores", ["1", "2"])
def test_a_command_spec_a_worker_cannot_use_fails_that_task_alone(redis_url, queue, workers, cores):
    process = workers.start("--cores", cores)
    warm_up(queue)
    fresh, ids = tampered(
        redis_url,
        queue,
        process,
        [wq.PythonTask(my_sum, 9, 9), wq.Task("echo fine"), wq.PythonTask(my_sum, 3, 4)],
        {0: {"spec": b'WQ\x01{"kind":"cmd","command":"true","env":[1]}'}},
    )
    tasks = back(fresh, ids)
    assert tasks[ids[0]].result == wq.WORK_QUEUE_RESULT_UNKNOWN and "'env'" in tasks[ids[0]].error
    assert tasks[ids[1]].output == "fine\n" and tasks[ids[2]].output == 7
    assert process.poll() is None


@pytest.mark.parametrize("cores", ["1", "2"])
def test_a_function_key_of_the_wrong_type_fails_its_task_alone_naming_the_key(redis_url, queue, workers, cores):
    client = redis.Redis.from_url(redis_url)
    process = workers.start("--cores", cores)
    warm_up(queue)
    stamp = time.time_ns()
    function = lambda: stamp  # noqa: E731 (a body of its own, pickled by value)
    key = f"wq:{{{queue.name}}}:fn:{digest_pickle(function)[0]}"
    client.rpush(key, "not a function body")  # the manager's SET NX leaves it
    ids = submitted(queue, [wq.PythonTask(function), wq.Task("echo fine"), wq.PythonTask(my_sum, 3, 4)])
    tasks = back(queue, ids)
    assert tasks[ids[0]].result == wq.WORK_QUEUE_RESULT_UNKNOWN and key in tasks[ids[0]].error
    assert tasks[ids[1]].output == "fine\n" and tasks[ids[2]].output == 7
    assert process.poll() is None


@pytest.mark.parametrize("cores", ["1", "2"])
@pytest.mark.parametrize("kind", ["set", "string"])
def test_results_are_held_while_done_has_the_wrong_type_and_arrive_once_it_is_repaired(
    redis_url, queue, workers, tmp_path, cores, kind
):
    client = redis.Redis.from_url(redis_url)
    done = f"wq:{{{queue.name}}}:done"
    log_path = tmp_path / "worker.log"
    process = start_logged_worker(workers, log_path, "--cores", cores)
    (client.sadd if kind == "set" else client.set)(done, "garbage")
    ids = submitted(queue, [wq.PythonTask(my_sum, i, 1) for i in range(3)] + [wq.Task("echo fine")])
    assert wait_until(lambda: f"cannot read {done} " in log_path.read_text(), 30)
    time.sleep(2.5)  # the worker tries again meanwhile: nothing of these results is written
    states = [client.hget(task_key(queue, i), "s") for i in ids]
    assert states == [b"2"] * 4 and client.type(done) == kind.encode()
    assert log_path.read_text().count(f"cannot read {done} ") == 1  # logged once a minute at most
    client.delete(done)  # repaired
    tasks = drain(queue, 4, timeout=30)
    assert sorted(t.id for t in tasks) == ids
    assert sorted(map(str, (t.output for t in tasks))) == ["1", "2", "3", "fine\n"]
    assert process.poll() is None


def test_results_are_held_while_leases_have_the_wrong_type_and_arrive_once_it_is_repaired(
    redis_url, queue, workers, tmp_path
):
    client = redis.Redis.from_url(redis_url)
    leases = f"wq:{{{queue.name}}}:leases"
    log_path = tmp_path / "worker.log"
    process = start_logged_worker(workers, log_path, "--cores", "4")
    tasks = [wq.Task(f"sleep 1; echo {i}") for i in range(3)]
    for task in tasks:
        task.specify_cores(1)  # all three at once
    ids = submitted(queue, tasks)
    assert wait_until(lambda: [client.hget(task_key(queue, i), "s") for i in ids] == [b"2"] * 3, 30)
    client.delete(leases)
    client.rpush(leases, "garbage")  # while they run: their results find it at delivery
    assert wait_until(lambda: f"cannot read {leases} " in log_path.read_text(), 30)
    time.sleep(2.5)  # they ended meanwhile; their results are held, nothing of them written
    assert [client.hget(task_key(queue, i), "s") for i in ids] == [b"2"] * 3
    assert client.llen(f"wq:{{{queue.name}}}:done") == 0
    client.delete(leases)  # repaired
    tasks = drain(queue, 3, timeout=30)
    assert sorted((t.id, t.output) for t in tasks) == [(i, f"{n}\n") for n, i in enumerate(ids)]
    assert process.poll() is None


def test_a_worker_record_of_the_wrong_type_is_replaced_and_its_leases_still_renew(redis_url, queue, workers):
    client = redis.Redis.from_url(redis_url)
    name = f"w1@{socket.gethostname()}"
    record = f"wq:{{{queue.name}}}:w:{name}"
    process = workers.start("--cores", "1", "--name", "w1", "--lease-seconds", "1")
    ids = submitted(queue, [wq.Task("sleep 3; echo done")])
    assert wait_until(lambda: client.hget(task_key(queue, ids[0]), "s") == b"2", 30)
    client.delete(record)
    client.set(record, "garbage")
    (task,) = drain(queue, 1, timeout=30)
    assert task.output == "done\n" and client.hget(task_key(queue, ids[0]), "a") == b"1"  # its lease never expired
    assert client.type(record) == b"hash"
    assert process.poll() is None
