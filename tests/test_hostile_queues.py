"""Another client with write access breaks keys of a queue: the queue keeps serving.

Keys of the wrong type at a queue's registered sub-queues, wake keys, task hashes and
large fields are skipped (reported in the worker's log and metrics, and by the
exporter), and tasks too large to load fail unloaded (``--max-task-bytes``).  Real Redis,
real worker processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import redis
from conftest import TESTS_DIR, drain, wait_until
from helpers_tasks import my_sum
from monitoring_helpers import http_get, samples

import wq_redis as wq
from wq_redis.ops.exporter import QueueExporter
from wq_redis.protocol.serialize import function_digest

MiB = 1024 * 1024
PLAIN = "c-1|"  # the sub-queue of a task that declares nothing, no tag


def start_logged_worker(workers, log_path, *args: str) -> subprocess.Popen[bytes]:
    """A worker whose log goes to ``log_path``; stopped (by PID) with the fixture's."""
    path = os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wq_redis",
                "worker",
                "--redis-url",
                workers.redis_url,
                "--queue",
                workers.queue_name,
                "--log-level",
                "warning",
                *args,
            ],
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.DEVNULL,
            stderr=log,
        )
    workers.processes.append(process)
    return process


def metrics_address(client: redis.Redis, queue: str) -> str:
    found: list[str] = []

    def recorded() -> bool:
        for name in client.zrange(f"wq:{{{queue}}}:workers", 0, -1):
            address = client.hget(f"wq:{{{queue}}}:w:{name.decode()}", "metrics")
            if address:
                found.append(address.decode())
        return bool(found)

    assert wait_until(recorded, 20)
    return found[0]


def first_member(client: redis.Redis, queue: str) -> str:
    members = [m.decode() for m in client.smembers(f"wq:{{{queue}}}:queues")]
    assert members
    return sorted(members)[0]


@pytest.mark.parametrize("cores", ["1", "2"])
def test_a_sub_queue_of_the_wrong_type_is_skipped_and_the_others_are_served(redis_url, queue, workers, tmp_path, cores):
    client = redis.Redis.from_url(redis_url)
    broken = f"wq:{{{queue.name}}}:fifo:c1.m0.d0.g0|broken"
    client.sadd(f"wq:{{{queue.name}}}:queues", "c1.m0.d0.g0|broken")
    client.set(broken, "not a list")
    log_path = tmp_path / "worker.log"
    process = start_logged_worker(
        workers, log_path, "--cores", cores, "--metrics-port", "0", "--metrics-addr", "127.0.0.1"
    )
    queue.submit_many([wq.PythonTask(my_sum, i, 1) for i in range(20)])
    assert sorted(t.output for t in drain(queue, 20, timeout=60)) == [i + 1 for i in range(20)]
    status, body = http_get(f"http://{metrics_address(client, queue.name)}/metrics")
    parsed = samples(body)
    assert status == 200 and parsed[("wq_worker_broken_queue_keys_total", (("key", broken),))] >= 1
    assert process.poll() is None
    logged = log_path.read_text()
    assert f"cannot read {broken}" in logged and logged.count(f"cannot read {broken}") == 1  # rate-limited


def test_prioritized_sub_queue_of_the_wrong_type_is_skipped(queue, workers, redis_url):
    client = redis.Redis.from_url(redis_url)
    client.sadd(f"wq:{{{queue.name}}}:queues", "c1.m0.d0.g0|x")
    client.hset(f"wq:{{{queue.name}}}:ready:c1.m0.d0.g0|x", "a", "b")
    workers.start("--cores", "2")
    queue.submit_many([wq.PythonTask(my_sum, 1, i) for i in range(5)])
    assert len(drain(queue, 5, timeout=60)) == 5


@pytest.mark.parametrize("cores", ["1", "2"])
def test_wake_keys_of_the_wrong_type_are_reported_and_left_out_of_the_waits(redis_url, queue, workers, tmp_path, cores):
    client = redis.Redis.from_url(redis_url)
    queue.submit(wq.PythonTask(my_sum, 0, 0))
    queue._buffer.flush()
    client.delete(f"wq:{{{queue.name}}}:wake")
    client.hset(f"wq:{{{queue.name}}}:wake", "a", "b")  # rung when a new queue appears
    own = f"wq:{{{queue.name}}}:ww:w1@{socket.gethostname()}"
    client.set(own, "junk")  # the worker rings it on itself
    log_path = tmp_path / "worker.log"
    process = start_logged_worker(workers, log_path, "--cores", cores, "--name", "w1")
    assert len(drain(queue, 1, timeout=30)) == 1
    # idle: its waits meet the broken keys, and it says so
    assert wait_until(
        lambda: (
            f"cannot read wq:{{{queue.name}}}:wake " in log_path.read_text()
            and f"cannot read {own} " in log_path.read_text()
        ),
        timeout=30,
    )
    queue.submit_many([wq.PythonTask(my_sum, i, 0) for i in range(5)])  # rings the sub-queue's own wake key
    assert sorted(t.output for t in drain(queue, 5, timeout=60)) == list(range(5))
    assert process.poll() is None
    logged = log_path.read_text()
    assert f"cannot read wq:{{{queue.name}}}:wake " in logged and f"cannot read {own} " in logged
    assert "calls to Redis" not in logged  # no claim failed meanwhile


def test_a_task_id_whose_hash_is_of_the_wrong_type_is_dropped_and_the_rest_run(redis_url, queue, workers):
    client = redis.Redis.from_url(redis_url)
    queue.submit(wq.PythonTask(my_sum, 0, 0))
    queue._buffer.flush()
    member = first_member(client, queue.name)
    client.set(f"wq:{{{queue.name}}}:t:999999", "not a hash")
    client.lpush(f"wq:{{{queue.name}}}:fifo:{member}", 999999, "garbage")
    queue.submit_many([wq.PythonTask(my_sum, i, 1) for i in range(5)])
    workers.start("--cores", "2")
    assert sorted(t.output for t in drain(queue, 6, timeout=60)) == [0, 1, 2, 3, 4, 5]


def test_the_exporter_reports_keys_it_cannot_read(redis_url, queue):
    client = redis.Redis.from_url(redis_url)
    queue.submit(wq.PythonTask(my_sum, 0, 0))
    queue._buffer.flush()
    client.sadd(f"wq:{{{queue.name}}}:queues", "c1.m0.d0.g0|broken")
    client.set(f"wq:{{{queue.name}}}:fifo:c1.m0.d0.g0|broken", "not a list")
    exporter = QueueExporter(client, [queue.name])
    parsed = samples(exporter.exposition())
    key = ("key", f"wq:{{{queue.name}}}:fifo:c1.m0.d0.g0|broken")
    assert parsed[("wq_queue_unreadable_keys", (key, ("queue", queue.name)))] == 1
    assert parsed[("wq_tasks_waiting", (("queue", queue.name), ("resource_class", "c-1"), ("tag", "")))] == 1


def test_status_counts_a_broken_sub_queue_as_empty(redis_url, queue):
    client = redis.Redis.from_url(redis_url)
    queue.submit(wq.PythonTask(my_sum, 0, 0))
    queue._buffer.flush()
    client.sadd(f"wq:{{{queue.name}}}:queues", "c1.m0.d0.g0|broken")
    client.set(f"wq:{{{queue.name}}}:fifo:c1.m0.d0.g0|broken", "not a list")
    snap = queue._store.snapshot(60_000)
    assert snap.waiting[PLAIN] == 1 and snap.waiting["c1.m0.d0.g0|broken"] == 0
    assert [key for key, _ in snap.broken] == [f"wq:{{{queue.name}}}:fifo:c1.m0.d0.g0|broken"]


# -- --max-task-bytes ----------------------------------------------------------------------------
@pytest.mark.parametrize("cores", ["1", "2"])
def test_a_task_over_max_task_bytes_fails_unloaded_and_the_next_runs(queue, workers, cores):
    process = workers.start("--cores", cores, "--max-task-bytes", "1M")
    big = queue.submit(wq.PythonTask(len, b"x" * (2 * MiB)))
    small = queue.submit(wq.PythonTask(my_sum, 2, 3))
    done = {t.id: t for t in drain(queue, 2, timeout=60)}
    assert done[small].output == 5
    assert done[big].result == wq.WORK_QUEUE_RESULT_RESOURCE_EXHAUSTION
    assert "--max-task-bytes" in done[big].error and "over the 1048576 bytes" in done[big].error
    assert process.poll() is None


def test_an_oversized_field_written_into_a_task_hash_fails_the_task(redis_url, queue, workers):
    client = redis.Redis.from_url(redis_url)
    task_id = queue.submit(wq.PythonTask(my_sum, 1, 1))
    queue._buffer.flush()
    client.hset(f"wq:{{{queue.name}}}:t:{task_id}", "junk", b"y" * (2 * MiB))
    workers.start("--cores", "2", "--max-task-bytes", "1M")
    task = drain(queue, 1, timeout=30)[0]
    assert task.result == wq.WORK_QUEUE_RESULT_RESOURCE_EXHAUSTION and "--max-task-bytes" in task.error


def test_a_large_field_of_the_wrong_type_fails_its_task_as_input_missing(redis_url, queue, workers):
    client = redis.Redis.from_url(redis_url)
    big = queue.submit(wq.PythonTask(len, b"x" * (200 * 1024)))  # over 64 KiB: kept beside the hash
    queue._buffer.flush()
    field_key = f"wq:{{{queue.name}}}:t:{big}:args"
    assert client.exists(field_key)
    client.delete(field_key)
    client.rpush(field_key, "a list now")
    small = queue.submit(wq.PythonTask(my_sum, 2, 2))
    workers.start("--cores", "2")
    done = {t.id: t for t in drain(queue, 2, timeout=30)}
    assert done[small].output == 4
    assert done[big].result == wq.WORK_QUEUE_RESULT_INPUT_MISSING and field_key in done[big].error


def test_a_function_over_max_task_bytes_is_never_loaded(redis_url, queue, workers):
    client = redis.Redis.from_url(redis_url)
    task_id = queue.submit(wq.PythonTask(my_sum, 1, 1))
    queue._buffer.flush()
    digest = function_digest(client.hgetall(f"wq:{{{queue.name}}}:t:{task_id}"))
    client.set(f"wq:{{{queue.name}}}:fn:{digest}", b"z" * 8192)
    workers.start("--cores", "2", "--max-task-bytes", "4K")
    task = drain(queue, 1, timeout=30)[0]
    assert task.result == wq.WORK_QUEUE_RESULT_RESOURCE_EXHAUSTION
    assert "function" in task.error and "--max-task-bytes" in task.error


def test_max_task_bytes_takes_sizes_and_says_so_in_help():
    out = subprocess.run([sys.executable, "-m", "wq_redis", "worker", "--help"], capture_output=True, text=True)
    assert "--max-task-bytes" in out.stdout and "WQ_MAX_TASK_BYTES" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "wq_redis", "worker", "--redis-url", "redis://127.0.0.1:1", "--max-task-bytes", "lots"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not a size" in bad.stderr


# -- the manager's side --------------------------------------------------------------------------
def test_submit_refuses_a_task_over_the_managers_max_task_bytes(queue):
    queue.specify_file_limits(max_task_bytes=MiB)
    task = wq.PythonTask(len, b"x" * (2 * MiB))
    with pytest.raises(ValueError) as refused:
        queue.submit(task)
    message = str(refused.value)
    assert "len" in message and "2.0 MiB" in message and "1.0 MiB" in message and "--max-task-bytes" in message
    assert task.id is None
    queue.submit(wq.PythonTask(my_sum, 1, 2))  # the queue goes on


def test_the_managers_limit_counts_input_files_with_the_arguments(queue, tmp_path):
    queue.specify_file_limits(max_task_bytes=MiB)
    data = tmp_path / "input.bin"
    data.write_bytes(b"d" * (600 * 1024))
    task = wq.PythonTask(len, b"x" * (600 * 1024))
    task.specify_input_file(str(data), "input.bin")
    with pytest.raises(ValueError, match="input files"):
        queue.submit(task)


def test_a_registry_of_the_wrong_type_refuses_a_submit_whole_and_the_task_is_sent_once_it_is_gone(
    queue, redis_url, queue_name, workers
):
    """Tasks queued where no claim looks would be lost: submit.lua refuses before it writes
    anything, the manager holds the task, and sends it again once the key is repaired."""
    from wq_redis.protocol.keys import QueueKeys

    client = redis.Redis.from_url(redis_url)
    registry = QueueKeys(queue_name).registry
    client.delete(registry)
    client.set(registry, b"garbage")
    task = wq.PythonTask(pow, 2, 5)
    queue.submit(task)
    with pytest.raises(redis.ResponseError, match=r"queue registry .* not a set"):
        queue.stats  # noqa: B018  (sends what submit buffered)
    assert client.get(registry) == b"garbage"
    assert not client.exists(QueueKeys(queue_name).task(task.id))  # nothing half-written
    client.delete(registry)
    workers.start("--cores", "1")
    (done,) = drain(queue, 1)
    assert done.id == task.id and done.output == 32
    assert queue.empty()
