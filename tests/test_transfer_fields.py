"""A task's transfer fields under Work Queue's names (client/transfer.py): the bytes of
its inputs and outputs and when the worker staged and collected them, zeros for a task
without files and for a value that does not parse."""

from __future__ import annotations

import os

import pytest
import redis
from conftest import drain
from everyday_tasks import square

import wq_redis as wq
from wq_redis.client.transfer import parse_transfer
from wq_redis.protocol.store import QueueStore

TRANSFER_NAMES = (
    "total_bytes_sent",
    "total_bytes_received",
    "total_bytes_transferred",
    "total_transfer_time",
    "send_input_start",
    "send_input_finish",
    "receive_output_start",
    "receive_output_finish",
)


def _transfer(task: wq.Task) -> dict[str, int]:
    return {name: getattr(task, name) for name in TRANSFER_NAMES}


def test_a_command_task_reports_its_input_and_output_bytes_and_ordered_times(queue, workers, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(3000))
    task = wq.Task("cat in.bin > copy.bin && head -c 2000 /dev/zero >> copy.bin")
    task.specify_input_file(str(source), "in.bin", cache=False)
    task.specify_output_file(str(tmp_path / "copy.bin"), "copy.bin", cache=False)
    queue.submit(task)
    workers.start("--cores", "1")
    (done,) = drain(queue, 1)
    assert done.result == wq.WORK_QUEUE_RESULT_SUCCESS, done.error
    assert (tmp_path / "copy.bin").stat().st_size == 5000
    assert done.total_bytes_sent == 3000
    assert done.total_bytes_received == 5000
    assert done.total_bytes_transferred == 8000
    assert 0 < done.send_input_start <= done.send_input_finish
    assert done.send_input_finish <= done.execute_cmd_finish  # the worker's clock: sub-ms apart from Redis's
    assert done.send_input_finish <= done.receive_output_start <= done.receive_output_finish
    assert done.total_transfer_time == (done.send_input_finish - done.send_input_start) + (
        done.receive_output_finish - done.receive_output_start
    )


def test_a_cached_input_counts_its_bytes_too(queue, workers, tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(b"x" * 3000)
    task = wq.Task("wc -c < in.bin")
    task.specify_input_file(str(source), "in.bin", cache=True)
    queue.submit(task)
    workers.start("--cores", "1")
    (done,) = drain(queue, 1)
    assert done.result == wq.WORK_QUEUE_RESULT_SUCCESS, done.error
    assert (done.total_bytes_sent, done.total_bytes_received) == (3000, 0)
    assert 0 < done.send_input_start <= done.send_input_finish
    assert (done.receive_output_start, done.receive_output_finish) == (0, 0)  # no outputs declared


def test_a_python_task_without_files_reports_zeros_and_writes_no_field(queue, workers, redis_url):
    task = wq.PythonTask(square, 7)
    queue.submit(task)
    workers.start("--cores", "1")
    (done,) = drain(queue, 1)
    assert done.output == 49
    assert _transfer(done) == dict.fromkeys(TRANSFER_NAMES, 0)
    assert b"xfer" not in done._fields


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b"[1,2,3]",
        b'{"in":1}',
        b'{"in":"3000","out":0,"in_start":1,"in_end":2,"out_start":3,"out_end":4}',
        b'{"in":-5,"out":0,"in_start":1,"in_end":2,"out_start":3,"out_end":4}',
        b'{"in":1e400,"out":0,"in_start":1,"in_end":2,"out_start":3,"out_end":4}',
        b'{"in":true,"out":0,"in_start":1,"in_end":2,"out_start":3,"out_end":4}',
        b'{"in":99999999999999999999999,"out":0,"in_start":1,"in_end":2,"out_start":3,"out_end":4}',
        b"[" * 100_000,
        b"\xff\xfe",
    ],
)
def test_a_garbage_transfer_field_in_a_finished_hash_reads_as_zeros(queue, redis_url, garbage):
    client = redis.Redis.from_url(redis_url)
    store = QueueStore(client, queue.name)
    task_id = queue.submit(wq.Task("true"))
    queue._buffer.flush()  # submit() returns before its task is in Redis
    free = {"cores": 1, "memory": 1024, "disk": 1024, "gpus": 0}
    claimed, _, _ = store.claim("w@test", free, [], max_tasks=1, lease_ms=30_000, token_prefix="s1")
    assert [c.task_id for c in claimed] == [task_id]
    store.complete([(task_id, claimed[0].token, {"r": 0, "xfer": garbage})])
    done = queue.wait(10)
    assert done is not None and done.id == task_id and done.result == wq.WORK_QUEUE_RESULT_SUCCESS
    assert _transfer(done) == dict.fromkeys(TRANSFER_NAMES, 0)


def test_what_a_worker_writes_parses():
    raw = b'{"in":3000,"out":5000,"in_start":10,"in_end":20,"out_start":30,"out_end":45}'
    assert tuple(parse_transfer(raw)) == (3000, 5000, 10, 20, 30, 45)
    assert tuple(parse_transfer(None)) == (0,) * 6
