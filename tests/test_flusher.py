"""submit() buffers and a background thread sends; wait, close and the other calls flush
first; a failed send keeps its tasks and says so.  map chooses a chunksize itself."""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis
from conftest import drain, wait_until
from everyday_tasks import inverse, square
from helpers_tasks import my_sum

import wq_redis as wq
from wq_redis.client import mapping
from wq_redis.client.submit_buffer import SubmitBuffer


def test_tasks_submitted_one_by_one_all_come_back(queue, workers):
    ids = [queue.submit(wq.PythonTask(my_sum, i, 1)) for i in range(200)]
    workers.start("--cores", "2")
    done = drain(queue, 200)
    assert sorted(t.id for t in done) == sorted(ids)
    assert sorted(t.output for t in done) == list(range(1, 201))
    assert queue.wait(0) is None and queue.empty()


def test_submit_then_wait_sends_the_task_first(queue, workers):
    workers.start("--cores", "1")
    for i in range(20):  # each wait must find its task in Redis, whatever the thread did
        task_id = queue.submit(wq.PythonTask(my_sum, i, i))
        task = queue.wait(30)
        assert task.id == task_id and task.output == 2 * i


def test_a_lone_submit_after_a_wait_is_sent_even_if_no_wait_follows(queue, redis_url):
    """A submit right after wait() leaves its row for the next wait() (no thread wake-up);
    a caller that goes quiet instead still gets it sent by the thread's periodic check."""
    assert queue.wait(0) is None
    task_id = queue.submit(wq.Task("true"))
    assert not queue._buffer._kick.is_set()  # left for the next wait(): the thread not woken
    other = redis.Redis.from_url(redis_url)
    try:  # another client sees it without this queue calling anything
        assert wait_until(lambda: other.exists(queue._store.keys.task(task_id)) == 1, timeout=5)
    finally:
        other.close()
    assert len(queue._buffer) == 0


def test_calls_that_read_the_queue_see_buffered_tasks(queue):
    first = queue.submit(wq.Task("true"))
    assert queue.task_state(first) == wq.WORK_QUEUE_TASK_READY
    queue.submit(wq.Task("true"))
    assert queue.stats.tasks_submitted == 2 and queue.stats.tasks_waiting == 2
    third = queue.submit(wq.Task("true"))
    assert queue.cancel_by_taskid(third).id == third
    assert not queue.empty()


def test_close_sends_what_is_buffered(redis_url, queue_name):
    q = wq.WorkQueue(queue_name, redis_url=redis_url)
    ids = [q.submit(wq.Task("true")) for _ in range(50)]
    q.close()
    with wq.WorkQueue(queue_name, redis_url=redis_url) as again:
        assert again.stats.tasks_submitted == 50
        assert [again.task_state(i) for i in ids] == [wq.WORK_QUEUE_TASK_READY] * 50


def test_a_failed_send_keeps_the_tasks_and_surfaces_on_the_next_call(redis_url, queue_name, workers):
    queue = wq.WorkQueue(queue_name, redis_url=redis_url, reconnect_timeout=0)  # raise at once, not wait
    real = queue._store._pipeline
    failing = threading.Event()
    failing.set()

    def pipeline(calls):  # every script call of the queue fails while Redis is "away"
        if failing.is_set():
            raise redis.ConnectionError("Redis is away (test)")
        return real(calls)

    queue._store._pipeline = pipeline
    task_id = queue.submit(wq.PythonTask(my_sum, 2, 3))
    with pytest.raises(wq.RedisUnavailable, match="away"):
        queue.wait(0.5)
    with pytest.raises(wq.RedisUnavailable, match="away"):
        queue.submit(wq.PythonTask(my_sum, 1, 1))  # refused: the error persists
    with pytest.raises(wq.RedisUnavailable, match="away"):
        queue.submit_many([wq.PythonTask(my_sum, 1, 1)])  # not queued: it raised
    failing.clear()
    workers.start("--cores", "1")
    task = queue.wait(30)
    assert task.id == task_id and task.output == 5
    assert queue.wait(1) is None  # the refused submits were not queued
    assert queue.stats.tasks_submitted == 1
    queue.close()


def test_the_thread_retries_a_failed_send_by_itself(queue):
    real = queue._buffer._send
    calls = []

    def send(rows):
        calls.append(len(rows))
        if len(calls) == 1:
            raise redis.ConnectionError("once")
        return real(rows)

    queue._buffer._send = send
    queue.submit(wq.Task("true"))
    assert wait_until(lambda: len(calls) >= 2 and not queue._buffer and queue._buffer.error is None)
    assert queue.stats.tasks_submitted == 1


def test_a_submit_while_redis_is_briefly_down_is_not_lost(restartable_redis, queue_name):
    from conftest import Workers

    server = restartable_redis
    pool = Workers(server.url, queue_name)
    try:
        with wq.WorkQueue(queue_name, redis_url=server.url) as queue:
            before = queue.submit(wq.PythonTask(my_sum, 1, 1))
            assert queue.stats.tasks_submitted == 1
            time.sleep(1.5)  # appendfsync everysec: the first task is on disk
            server.kill()
            during = queue.submit(wq.PythonTask(my_sum, 2, 2))  # buffered; the thread retries
            time.sleep(0.5)
            server.restart()
            pool.start("--cores", "1")
            done = drain(queue, 2, timeout=60)
            assert {(t.id, t.output) for t in done} == {(before, 2), (during, 4)}
    finally:
        pool.stop_all()


def test_the_buffer_keeps_rows_in_order_after_a_failure():
    sent: list[list[int]] = []
    fail = [True]

    def send(rows):
        if fail[0]:
            raise ConnectionError("down")
        sent.append([r[0] for r in rows])

    buffer = SubmitBuffer(send)
    buffer._start = lambda: None  # no thread: this test flushes by hand
    buffer._thread = object()  # type: ignore[assignment]
    for i in range(3):
        buffer.add((i, "c1.m0.d0.g0|", 0.0, {}))
    with pytest.raises(ConnectionError):
        buffer.flush()
    assert len(buffer) == 3 and isinstance(buffer.error, ConnectionError)
    buffer.add((3, "c1.m0.d0.g0|", 0.0, {}))
    with pytest.raises(ConnectionError):
        buffer.send_now([(4, "c1.m0.d0.g0|", 0.0, {})])  # taken back: the caller was told
    assert len(buffer) == 4
    fail[0] = False
    buffer.flush()
    assert sent == [[0, 1, 2, 3]] and buffer.error is None and len(buffer) == 0


class Refused(Exception):
    """Stands for a refusal only the buffer's owner can settle (the manager's QueueStateLost)."""


def test_a_held_refusal_is_not_retried_by_the_thread_and_the_owner_resends_in_place():
    sends: list[list[tuple[int, str]]] = []
    refuse = [True]

    def send(rows):
        sends.append([(r[0], r[3]["v"]) for r in rows])
        if refuse[0]:
            raise Refused("lost")

    buffer = SubmitBuffer(send, hold_on=(Refused,))
    buffer.add((1, "c1.m0.d0.g0|", 0.0, {"v": "old"}))
    assert wait_until(lambda: buffer.held, timeout=5)  # the thread met the refusal
    buffer.add((2, "c1.m0.d0.g0|", 0.0, {"v": "old"}))
    time.sleep(0.3)  # the thread's idle checks and kicks come and go meanwhile
    assert sends == [[(1, "old")]] and len(buffer) == 2  # kept, not retried
    refuse[0] = False
    buffer.send_now([(1, "c1.m0.d0.g0|", 0.0, {"v": "new"})], replace=True)  # the owner sends task 1 anew
    assert sends[1:] == [[(2, "old"), (1, "new")]] and len(buffer) == 0
    assert buffer.error is None and not buffer.held
    buffer.close()


# -- map's automatic chunksize ---------------------------------------------------------
def _stats(cores: int, workers: int):
    from wq_redis.client.stats import Stats

    class Q:
        stats = Stats(total_cores=cores, workers_connected=workers)

    return Q()


def test_auto_chunksize_is_about_four_chunks_per_core():
    assert mapping.auto_chunksize(_stats(2, 2), range(1000)) == 125
    assert mapping.auto_chunksize(_stats(8, 2), list(range(100))) == 4
    assert mapping.auto_chunksize(_stats(64, 16), range(10)) == 1


def test_auto_chunksize_edges():
    assert mapping.auto_chunksize(_stats(2, 2), []) == 1
    assert mapping.auto_chunksize(_stats(2, 2), [7]) == 1
    no_workers = mapping.auto_chunksize(_stats(0, 0), range(3200))
    assert no_workers == 3200 // (mapping.CHUNKS_PER_SLOT * mapping.SLOTS_WITHOUT_WORKERS)
    assert mapping.auto_chunksize(_stats(1, 1), range(10**7)) == mapping.MAX_CHUNK_ITEMS
    big = [bytes([i % 256]) * 100_000 for i in range(200)]  # 100 kB items: about 10 per chunk, not 50
    assert 5 <= mapping.auto_chunksize(_stats(1, 1), big) <= 11
    assert mapping.auto_chunksize(_stats(2, 2), (x for x in range(1000))) == mapping.UNSIZED_CHUNKSIZE
    assert mapping.auto_chunksize(_stats(2, 2), iter(range(1000))) == mapping.UNSIZED_CHUNKSIZE


def test_map_chunks_by_itself_and_keeps_order_and_exceptions_per_item(queue, workers):
    workers.start("--cores", "1")
    assert wait_until(lambda: queue.stats.workers_connected == 1)
    items = list(range(40))
    out = queue.map(inverse, items)
    assert isinstance(out[0], ZeroDivisionError)
    assert out[1:] == [1 / i for i in items[1:]]
    assert queue.stats.tasks_submitted == 4  # 40 items, 1 core: 4 chunks of 10


def test_map_with_chunksize_one_runs_one_task_per_item(queue, workers):
    workers.start("--cores", "2")
    assert queue.map(square, range(12), chunksize=1) == [x * x for x in range(12)]
    assert queue.stats.tasks_submitted == 12


def test_map_of_a_generator_uses_the_fixed_chunksize(queue, workers):
    workers.start("--cores", "2")
    assert queue.map(square, (x for x in range(70))) == [x * x for x in range(70)]
    assert queue.stats.tasks_submitted == 3  # 32 + 32 + 6


def test_wait_after_the_last_task_returns_none_without_blocking(queue, workers):
    workers.start("--cores", "1")
    queue.submit(wq.PythonTask(my_sum, 1, 2))
    assert queue.wait(30).output == 3
    real = queue._store.retrieve
    blocks = []

    def retrieve(*args, **kwargs):
        blocks.append(args[3] if len(args) > 3 else kwargs.get("block", 0.0))
        return real(*args, **kwargs)

    queue._store.retrieve = retrieve
    assert queue.wait(-1) is None  # nothing outstanding: at once, as Work Queue does
    assert blocks == [0.0]


def test_interpreter_exit_sends_what_is_buffered(redis_url, queue_name, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "manager.py"
    script.write_text(
        "import wq_redis as wq, wq_redis.client.submit_buffer\n"
        "wq_redis.client.submit_buffer.LINGER_SECONDS = 600  # the thread would not send them in time\n"
        f"q = wq.WorkQueue({queue_name!r}, redis_url={redis_url!r})\n"
        "for _ in range(30):\n"
        "    q.submit(wq.Task('true'))\n"
        "# no close, no wait: the interpreter exits with the tasks buffered\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(wq.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    assert subprocess.run([sys.executable, str(script)], env=env, timeout=60).returncode == 0
    with wq.WorkQueue(queue_name, redis_url=redis_url) as q:
        assert q.stats.tasks_submitted == 30


def test_a_wait_after_a_lone_submit_sees_it_when_redis_lost_its_scripts(queue, workers, redis_url):
    """The submit and the retrieve go in one pipeline: a retrieve answered while the
    submit before it was refused (NOSCRIPT) must not say that nothing is outstanding."""
    from wq_redis.protocol.store import script_source

    workers.start("--cores", "1")
    client = redis.Redis.from_url(redis_url)
    retrieve_source = script_source("retrieve")
    for only_retrieve_loaded in (False, True):
        assert queue.wait(0) is None
        client.script_flush()  # Redis restarted, or SCRIPT FLUSH
        if only_retrieve_loaded:  # ... and another process loaded one script since
            client.script_load(retrieve_source)
        queue.submit(wq.PythonTask(my_sum, 1, 2))
        task = queue.wait(30)
        assert task is not None and task.output == 3
