"""The fast lane (worker/lane.py): an idle one-slot worker's warm child claims, runs and
delivers quick PythonTasks itself; the worker keeps leases, cancels, counts and faults."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import redis
from conftest import drain, wait_until
from helpers_tasks import busy, hard_exit, my_sum, pid_then_sleep, timed_sleep
from monitoring_helpers import http_get, samples, value

import wq_redis as wq
from wq_redis.protocol.keys import QueueKeys
from wq_redis.protocol.store import Delivery
from wq_redis.worker.child.channel import Channel
from wq_redis.worker.child.lane import ChildLane, lane_client_name
from wq_redis.worker.child.messages import LaneClaimed, LaneDone
from wq_redis.worker.child.process import Child


def lane_clients(redis_url: str, worker: str) -> list[dict]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [c for c in client.client_list() if c.get("name") == lane_client_name(worker)]
    finally:
        client.close()


def test_an_idle_one_slot_worker_claims_and_delivers_through_its_warm_child(queue, workers, redis_url):
    workers.start("--cores", "1", "--name", "solo")
    worker = f"solo@{socket.gethostname()}"
    for i in range(20):
        queue.submit(wq.PythonTask(my_sum, i, 1))
        task = queue.wait(30)
        assert task is not None and task.result == wq.WORK_QUEUE_RESULT_SUCCESS and task.output == i + 1
    lanes = lane_clients(redis_url, worker)
    assert len(lanes) == 1 and lanes[0]["cmd"] in ("blpop", "evalsha")  # the child waits for the next task
    assert queue.stats.tasks_done == 20


def test_a_worker_with_more_than_one_slot_has_no_lane(queue, workers, redis_url):
    workers.start("--cores", "2", "--name", "duo")
    queue.submit(wq.PythonTask(my_sum, 1, 2))
    assert queue.wait(30).output == 3
    assert lane_clients(redis_url, f"duo@{socket.gethostname()}") == []


def test_tasks_run_in_the_lane_are_counted_in_the_worker_metrics(queue, workers, redis_url):
    workers.start("--cores", "1", "--name", "counted", "--metrics-port", "0", "--metrics-addr", "127.0.0.1")
    for i in range(5):
        queue.submit(wq.PythonTask(my_sum, i, i))
        assert queue.wait(30).output == 2 * i
    client = redis.Redis.from_url(redis_url)
    address = client.hget(QueueKeys(queue.name).worker(f"counted@{socket.gethostname()}"), "metrics").decode()
    client.close()

    def completed() -> float | None:
        return value(samples(http_get(f"http://{address}/metrics")[1]), "wq_tasks_completed_total", result="success")

    assert wait_until(lambda: completed() == 5, timeout=5)  # the worker reads the ledger within 0.2 s
    parsed = samples(http_get(f"http://{address}/metrics")[1])
    assert value(parsed, "wq_tasks_started_total") == 5


def test_cancelling_a_task_the_lane_runs_kills_it_and_the_worker_goes_on(queue, workers, tmp_path):
    workers.start("--cores", "1")
    pid_file = tmp_path / "pid"
    task_id = queue.submit(wq.PythonTask(pid_then_sleep, str(pid_file), 60))
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
    pid = int(pid_file.read_text())
    assert queue.cancel_by_taskid(task_id) is not None
    assert wait_until(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=5
    )  # the heartbeat, woken by the cancel (its control key), saw the lease gone
    queue.submit(wq.PythonTask(my_sum, 2, 2))
    task = queue.wait(30)
    assert task is not None and task.output == 4


def test_a_lane_task_longer_than_its_lease_keeps_it_and_runs_once(queue, workers):
    workers.start("--cores", "1", "--lease-seconds", "1")
    queue.submit(wq.PythonTask(busy, 3.0))
    task = queue.wait(60)
    assert task is not None and task.result == wq.WORK_QUEUE_RESULT_SUCCESS and task.total_submissions == 1
    stats = queue.stats
    assert (stats.tasks_requeued, stats.tasks_late_results) == (0, 0)


def test_a_lane_task_that_ends_its_process_fails_alone_and_the_worker_goes_on(queue, workers):
    workers.start("--cores", "1")
    dead = wq.PythonTask(hard_exit, 7)
    queue.submit(dead)
    assert queue.wait(30) is dead
    assert dead.result == wq.WORK_QUEUE_RESULT_SIGNAL and dead.return_status == 7  # as on the per-task path
    assert dead.total_submissions == 1
    queue.submit(wq.PythonTask(my_sum, 1, 1))
    assert queue.wait(30).output == 2


def test_sigterm_ends_a_waiting_lane_and_the_worker_at_once(queue, workers, redis_url):
    worker = workers.start("--cores", "1", "--name", "leaving")
    queue.submit(wq.PythonTask(my_sum, 1, 2))
    assert queue.wait(30).output == 3
    assert wait_until(lambda: len(lane_clients(redis_url, f"leaving@{socket.gethostname()}")) == 1)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert time.monotonic() - started < 5  # the child's block ended by a ring, not by its timeout alone
    assert queue.stats.workers_connected == 0
    assert wait_until(lambda: lane_clients(redis_url, f"leaving@{socket.gethostname()}") == [], timeout=5)


def test_a_stream_of_tasks_reaches_every_lane_and_none_is_lost(queue, workers):
    for _ in range(3):
        workers.start("--cores", "1")
    ids = {queue.submit(wq.PythonTask(my_sum, i, 0)) for i in range(300)}
    done = drain(queue, 300, timeout=60)
    assert {t.id for t in done} == ids and sorted(t.output for t in done) == list(range(300))
    assert all(t.total_submissions == 1 for t in done)


@pytest.mark.faults
def test_a_result_the_lane_cannot_deliver_is_held_and_delivered_when_redis_returns(
    restartable_redis, queue_name, tmp_path
):
    server = restartable_redis
    log = tmp_path / "worker.log"
    with open(log, "wb") as stderr:  # the worker keeps its own copy of the descriptor
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wq_redis",
                "worker",
                "--redis-url",
                server.url,
                "--queue",
                queue_name,
                "--cores",
                "1",
                "--log-level",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))},
        )
    try:
        with wq.WorkQueue(queue_name, redis_url=server.url) as queue:
            queue.submit(wq.PythonTask(my_sum, 0, 0))  # the worker is up, its lane waits
            assert queue.wait(30).output == 0
            task_id = queue.submit(wq.PythonTask(timed_sleep, 3.0))
            assert wait_until(lambda: queue.task_state(task_id) == wq.WORK_QUEUE_TASK_RUNNING)
            time.sleep(1.2)  # appendfsync everysec: the claim is on disk
            server.kill()
            # past the child's reconnection retries (~9 s): it hands the result to the worker
            assert wait_until(lambda: b"could not deliver the result of task" in log.read_bytes(), timeout=30)
            server.restart()
            task = queue.wait(60)
            assert task is not None and task.id == task_id and task.result == wq.WORK_QUEUE_RESULT_SUCCESS
            assert task.total_submissions == 1
            queue.submit(wq.PythonTask(my_sum, 2, 3))  # and the lane serves again
            assert queue.wait(30).output == 5
    finally:
        worker.kill()
        worker.wait(10)


def test_a_full_ledger_sends_the_record_and_the_rest_of_the_lane_over_the_socket():
    worker_end, child_end = socket.socketpair()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:  # fill the pipe
            try:
                os.write(write_end, b"x" * 4096)
            except BlockingIOError:
                break
        lane = ChildLane(Child.__new__(Child))
        lane.child.conn, lane.child.ledger = Channel(child_end), write_end
        claimed = LaneClaimed(7, "token", "c1.m0.d0.g0|", None, None)
        lane._record(claimed)
        message = Channel(worker_end).recv_message()
        assert message == claimed
        assert pickle.loads(pickle.dumps(message)) == claimed
        os.set_blocking(read_end, False)
        while True:  # the worker read the ledger meanwhile: there is room again
            try:
                os.read(read_end, 1 << 20)
            except BlockingIOError:
                break
        lane._record(LaneDone("token", Delivery.RECORDED, {"r": 0}, 0.001))  # still after the claim: over the socket
        assert isinstance(Channel(worker_end).recv_message(), LaneDone)
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        worker_end.close()
        child_end.close()


def test_a_claim_that_carries_a_result_tells_of_its_delivery_once_even_when_it_claims_nothing(queue, redis_url):
    from wq_redis.protocol.store import Delivery, QueueStore, connect

    queue.submit(wq.PythonTask(my_sum, 1, 2))
    queue._buffer.flush()
    store = QueueStore(connect(redis_url), queue.name)
    free = {"cores": 1, "memory": 1000, "disk": 1000, "gpus": 0}
    (task,), eligible, _ = store.claim("w@h", free, [], 1, 30000, "s")
    seen: list[tuple[list[bool], bytes | None]] = []
    observer = redis.Redis.from_url(redis_url)

    def delivered(accepted: list[bool]) -> None:
        seen.append((accepted, observer.hget(store.keys.task(task.task_id), "r")))

    claimed, _, accepted = store.claim(
        "w@h",
        free,
        [],
        1,
        30000,
        "s",
        results=[(task.task_id, task.token, {"r": 0})],
        wake_on=eligible,
        block_seconds=0.2,
        delivered=delivered,
    )
    observer.close()
    assert claimed == [] and accepted == [Delivery.RECORDED]
    assert seen == [([Delivery.RECORDED], b"0")]  # told once, when Redis had recorded it


def test_a_lane_that_ends_holding_an_unrecorded_claim_hands_it_back(queue, redis_url, tmp_path):
    """The child died between Redis leasing a task to it and recording the claim: the
    worker finds the lease by the lane's token prefix and gives it back at once, the
    attempt not counted (else it would wait out its lease and count one)."""
    from wq_redis.protocol.store import connect
    from wq_redis.worker.loop import Worker, WorkerOptions
    from wq_redis.worker.resources import Capacity

    task_id = queue.submit(wq.PythonTask(my_sum, 2, 2))
    other_id = queue.submit(wq.PythonTask(my_sum, 3, 3))
    queue._buffer.flush()
    worker = Worker(
        connect(redis_url), Capacity(1, 1000, 1000, []), WorkerOptions(queue=queue.name, workdir=str(tmp_path / "w"))
    )
    try:
        free = {"cores": 1, "memory": 1000, "disk": 1000, "gpus": 0}
        (claimed,), _, _ = worker.store.claim(worker.name, free, [], 1, 30000, f"{worker.session}~7")
        (other,), _, _ = worker.store.claim(worker.name, free, [], 1, 30000, f"{worker.session}~70")  # another lane
        assert claimed.task_id == task_id and other.task_id == other_id
        worker.lane_gone(f"{worker.session}~7")
        assert queue.task_state(task_id) == wq.WORK_QUEUE_TASK_READY
        assert queue.task_state(other_id) == wq.WORK_QUEUE_TASK_RUNNING  # not that lane's
        (again,), _, _ = worker.store.claim(worker.name, free, [], 1, 30000, worker.session)
        assert again.task_id == task_id and again.fields[b"a"] == b"1"  # the lost attempt was not counted
    finally:
        worker.pool.close()
        worker.files.close()
