"""``wq-redis worker --wall-time SECONDS`` (work_queue_worker --wall-time): a worker in a
batch job takes only tasks that can end before it does, and at its end hands back what still
runs (the attempt not counted), delivers what finished, deregisters and exits 0."""

from __future__ import annotations

import time

import pytest
from conftest import drain, wait_until
from helpers_tasks import my_sum, timed_sleep

import wq_redis as wq
from wq_redis.protocol.store import QueueStore, connect

WALL = 4  # seconds the workers below live
EXIT_BOUND = WALL + 15  # they exit well within this (start-up included), on a loaded machine


def test_a_worker_with_a_wall_time_exits_0_in_about_that_time_having_delivered_its_results(queue, workers):
    queue.submit_many([wq.PythonTask(my_sum, i, i) for i in range(5)])
    worker = workers.start("--cores", "1", "--wall-time", str(WALL))
    assert sorted(t.output for t in drain(queue, 5)) == [0, 2, 4, 6, 8]
    assert worker.wait(EXIT_BOUND) == 0
    assert queue.stats.workers_connected == 0  # it deregistered


def test_the_wall_time_falls_back_to_WQ_WALL_TIME(queue, workers):
    worker = workers.start("--cores", "1", env={"WQ_WALL_TIME": "1"})
    assert worker.wait(EXIT_BOUND) == 0


def test_tasks_that_cannot_end_before_the_worker_are_left_queued_for_another(queue, workers):
    fits = wq.Task("echo fits")
    fits.specify_running_time_max(1)
    fits.specify_priority(10)  # the head of the queue: taken first
    too_long = wq.Task("echo too long")
    too_long.specify_running_time_max(3600)
    too_short_a_life = wq.Task("echo needs an hour")
    too_short_a_life.specify_running_time_min(3600)  # Work Queue's own check of a worker's end
    ends_later = wq.Task("echo ends later")
    ends_later.specify_end_time(int((time.time() + 3600) * 1e6))  # ... and its other one
    left = [too_long, too_short_a_life, ends_later]
    queue.submit_many([fits, *left])
    ending = workers.start("--cores", "1", "--wall-time", str(WALL), "--name", "ending")
    assert queue.wait(30) is fits and fits.worker.startswith("ending@")
    assert ending.wait(EXIT_BOUND) == 0
    assert queue.stats.tasks_waiting == 3  # not failed, not taken: still queued
    assert all(queue.task_state(t.id) == wq.WORK_QUEUE_TASK_READY for t in left)
    workers.start("--cores", "1", "--name", "lasting")
    done = drain(queue, 3)
    assert {t.id for t in done} == {t.id for t in left}
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS and t.worker.startswith("lasting@") for t in done)
    assert all(t.total_submissions == 1 for t in done)


def test_a_running_task_that_can_finish_in_time_finishes_before_the_worker_exits(queue, workers):
    task = wq.PythonTask(timed_sleep, 2)
    task.specify_running_time_max(WALL - 1)
    queue.submit(task)
    worker = workers.start("--cores", "1", "--wall-time", str(WALL + 2))
    assert queue.wait(30) is task
    assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS and task.total_submissions == 1
    assert worker.wait(EXIT_BOUND) == 0


def test_a_task_without_a_maximum_still_running_at_the_end_is_handed_back_uncounted(queue, workers, tmp_path):
    """Work Queue gives a task without limits to any worker; at the worker's end it is
    forsaken (here: handed back, the attempt not counted) and runs elsewhere."""
    slow_here = tmp_path / "slow"
    slow_here.touch()
    task = wq.Task(f"if [ -e {slow_here} ]; then sleep 60; fi; echo done")
    queue.submit(task)
    ending = workers.start("--cores", "1", "--wall-time", str(WALL), "--name", "ending")
    assert wait_until(lambda: queue.task_state(task.id) == wq.WORK_QUEUE_TASK_RUNNING, timeout=20)
    assert ending.wait(EXIT_BOUND) == 0
    assert wait_until(lambda: queue.task_state(task.id) == wq.WORK_QUEUE_TASK_READY, timeout=10)
    slow_here.unlink()
    workers.start("--cores", "1", "--name", "lasting")
    assert queue.wait(30) is task
    assert task.std_output == "done\n" and task.worker.startswith("lasting@")
    assert task.total_submissions == 1  # the attempt handed back was not counted


@pytest.mark.parametrize("priority", [0, 1], ids=["fifo", "prioritized"])
def test_a_claim_brings_only_the_followers_that_end_in_time(queue, redis_url, priority):
    """Followers run one after another on their lead's resources: their maxima add up; a
    task that does not fit a group's time left may still lead a group of its own."""
    tasks = []
    for i in range(5):
        task = wq.Task(f"echo {i}")
        task.specify_running_time_max(2)
        task.specify_priority(priority)
        task.specify_cores(1)  # two at once on the claim's two cores
        tasks.append(task)
    queue.submit_many(tasks)
    queue._buffer.flush()  # submit returns before its tasks are in Redis
    store = QueueStore(connect(redis_url), queue.name)
    free = {"cores": 2, "memory": 1000, "disk": 1000, "gpus": 0}

    def claim(ends_at: float) -> tuple[list[tuple[int, bool]], list[str]]:
        claimed, eligible, _ = store.claim(
            "w@h", free, [], 2, 30000, "s", followers=5, follower_bytes=1 << 20, ends_at=ends_at
        )
        return [(c.task_id, c.follows) for c in claimed], eligible

    taken, eligible = claim(time.time() + 5)  # per slot 2 + 2 s fit, a third 2 s does not
    ids = [t.id for t in tasks]
    assert taken == [(ids[0], False), (ids[1], True), (ids[2], False), (ids[3], True)] and eligible
    assert claim(time.time() + 1) == ([], [])  # its head is left, and does not wake this worker
    assert claim(time.time() - 1) == ([], [])  # a worker whose end came takes nothing
    assert claim(0)[0] == [(ids[4], False)]  # one without an end takes it


@pytest.mark.parametrize(
    ("spec", "taken"),
    [
        (b'WQ\x01{"kind":"cmd","command":"true","running_time_max":1e999}', False),  # forever: left
        (b'WQ\x01{"kind":"cmd","command":"true","running_time_max":"soon"}', True),  # the worker fails it
        (b'WQ\x01{"kind":"cmd","command":"true","running_time_max":-}', True),
        (b'WQ\x01{"kind":"cmd","command":"echo \\"running_time_max\\":99999"}', True),  # inside a string
        (b"\xff\x00 not an envelope", True),
    ],
    ids=["infinite", "text", "dash", "quoted", "garbage"],
)
def test_a_spec_written_by_another_client_cannot_break_a_claim_with_an_end(queue, redis_url, spec, taken):
    task_id = queue.submit(wq.Task("true"))
    queue._buffer.flush()
    client = connect(redis_url)
    store = QueueStore(client, queue.name)
    client.hset(store.keys.task(task_id), "spec", spec)
    free = {"cores": 1, "memory": 1000, "disk": 1000, "gpus": 0}
    claimed, _, _ = store.claim("w@h", free, [], 1, 30000, "s", ends_at=time.time() + 60)
    assert [c.task_id for c in claimed] == ([task_id] if taken else [])


def test_a_task_key_of_the_wrong_type_is_reported_by_a_claim_with_an_end(queue, redis_url):
    task_id = queue.submit(wq.Task("true"))
    queue._buffer.flush()
    client = connect(redis_url)
    store = QueueStore(client, queue.name)
    client.delete(store.keys.task(task_id))
    client.set(store.keys.task(task_id), "not a hash")
    reported: list[tuple[str, str]] = []
    free = {"cores": 1, "memory": 1000, "disk": 1000, "gpus": 0}
    claimed, _, _ = store.claim("w@h", free, [], 1, 30000, "s", ends_at=time.time() + 60, on_broken=reported.extend)
    assert claimed == [] and [key for key, _ in reported] == [store.keys.task(task_id)]
