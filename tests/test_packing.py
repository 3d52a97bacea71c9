"""Packs (packing.py): short calls of one submit_many stored, claimed and delivered as one
hash, each member still a task of its own: id, result, output, failure, cancel, counts."""

from __future__ import annotations

import os
import pickle
import signal
import time

import pytest
import redis
from conftest import drain, wait_until
from helpers_tasks import logged_work, member_probe, timed_sleep

import wq_redis as wq
from wq_redis.client.packs import PACK_TASKS, PackPlanner
from wq_redis.protocol.keys import QueueKeys
from wq_redis.protocol.pace import Pace
from wq_redis.protocol.packing import dump, load
from wq_redis.protocol.report import gather
from wq_redis.protocol.store import QueueStore


def _learn_pace(queue: wq.WorkQueue, count: int = 20) -> None:
    """Run a few calls so the manager knows ``member_probe`` is short (packs need that)."""
    queue.submit_many([wq.PythonTask(member_probe, i) for i in range(count)])
    assert len(drain(queue, count)) == count
    assert queue.empty()  # (and acknowledged: another manager is not handed them again)
    assert not queue._books.pack_of  # a function not seen finishing is never packed


def _task_keys(redis_url: str, queue_name: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    return client.keys(QueueKeys(queue_name).prefix + "t:*") + client.keys(QueueKeys(queue_name).prefix + "v:*")


def test_packed_tasks_each_come_back_as_their_own_task(queue, workers, redis_url, queue_name):
    workers.start("--cores", "1")
    _learn_pace(queue)
    ids = queue.submit_many([wq.PythonTask(member_probe, i) for i in range(200)])
    assert len(set(queue._books.pack_of.values())) < 200 / 2, "short calls of a known function are packed"
    tasks = {t.id: t for t in drain(queue, 200)}
    assert set(tasks) == set(ids)
    for i, task_id in enumerate(ids):
        task = tasks[task_id]
        assert task.result == wq.WORK_QUEUE_RESULT_SUCCESS and task.return_status == 0
        assert task.output == (i, str(task_id))  # the member's own id in WQ_TASK_ID
        assert task.std_output == f"member {i}\n"
        assert task.hostname and task.resources_measured.wall_time >= 0
    stats = queue.stats
    assert stats.tasks_submitted == 220 and stats.tasks_done == 220 and stats.tasks_failed == 0
    assert queue.empty() and not queue._books.pack_of
    assert _task_keys(redis_url, queue_name) == []  # nothing left behind in Redis


def test_a_failing_member_fails_alone(queue, workers):
    workers.start("--cores", "1")
    _learn_pace(queue)
    ids = queue.submit_many([wq.PythonTask(member_probe, i, "raise" if i == 7 else "") for i in range(40)])
    assert queue._books.pack_of.get(ids[7]) is not None
    tasks = {t.id: t for t in drain(queue, 40)}
    assert tasks[ids[7]].return_status == 1 and "member 7 failed" in tasks[ids[7]].std_output + (
        tasks[ids[7]].error or ""
    )
    assert isinstance(tasks[ids[7]].output, ValueError)
    assert all(tasks[ids[i]].output == (i, str(ids[i])) for i in range(40) if i != 7)


def test_large_member_results_are_stored_beside_and_cleaned_up(queue, workers, redis_url, queue_name):
    workers.start("--cores", "1")
    _learn_pace(queue)
    ids = queue.submit_many([wq.PythonTask(member_probe, i, "big" if i % 3 == 0 else "") for i in range(12)])
    assert queue._books.pack_of
    tasks = {t.id: t for t in drain(queue, 12)}
    for i, task_id in enumerate(ids):
        expected = bytes([i % 256]) * (200 * 1024) if i % 3 == 0 else (i, str(task_id))
        assert tasks[task_id].output == expected
    queue.empty()  # acknowledges: the pack and its members' large values are deleted
    assert _task_keys(redis_url, queue_name) == []


def test_waiting_members_count_and_cancel_one_by_one_or_by_tag(queue, workers, redis_url, queue_name):
    workers.start("--cores", "1")
    _learn_pace(queue)
    workers.stop_all()
    tagged = []
    for i in range(30):
        task = wq.PythonTask(member_probe, i)
        task.specify_tag("mine")
        tagged.append(task)
    ids = queue.submit_many(tagged)
    others = queue.submit_many([wq.PythonTask(member_probe, i) for i in range(100, 110)])
    assert queue._books.pack_of.get(ids[0]) is not None
    stats = queue.stats
    assert stats.tasks_waiting == 40  # members count, not packs
    client = redis.Redis.from_url(redis_url)
    report = gather(client, [queue_name], tasks=True, categories=True)["queues"][0]
    assert sum(t["tasks"] for t in report["tasks"]) == 40 and len(report["tasks"]) < 40
    assert sum(row["tasks"] for row in report["waiting_by_class"]) == 40
    assert sum(n for n, _ in QueueStore(client, queue_name).export_snapshot().waiting.values()) == 40  # Prometheus
    assert queue.task_state(ids[3]) == wq.WORK_QUEUE_TASK_READY

    one = queue.cancel_by_taskid(ids[3])
    assert one is not None and one.id == ids[3]
    assert queue.cancel_by_taskid(ids[3]) is None  # once only
    assert queue.stats.tasks_waiting == 39
    cancelled = queue.cancel_by_tasktag("mine")
    assert sorted(t.id for t in cancelled) == sorted(set(ids) - {ids[3]})
    assert all(isinstance(t, wq.PythonTask) for t in cancelled)
    stats = queue.stats
    assert stats.tasks_waiting == 10 and stats.tasks_cancelled == 30

    workers.start("--cores", "1")
    tasks = drain(queue, 10)
    assert sorted(t.output[0] for t in tasks) == list(range(100, 110))
    assert queue.wait(1) is None and queue.empty()
    assert _task_keys(redis_url, queue_name) == []
    assert {i for i in others} == {t.id for t in tasks}


def test_a_member_cancelled_while_its_pack_runs_is_never_returned(queue, workers):
    workers.start("--cores", "1")
    _learn_pace(queue)
    # a slow call first: the pack after it is claimed with it and waits on the same slot
    first = queue.submit(wq.PythonTask(timed_sleep, 1.5))
    ids = queue.submit_many([wq.PythonTask(member_probe, i) for i in range(20)])
    assert wait_until(lambda: queue.task_state(first) == wq.WORK_QUEUE_TASK_RUNNING)
    time.sleep(0.3)
    victim = queue.cancel_by_taskid(ids[5])
    assert victim is not None and victim.id == ids[5]
    tasks = drain(queue, 20)
    assert ids[5] not in {t.id for t in tasks} and first in {t.id for t in tasks}
    assert queue.wait(1) is None and queue.empty()
    stats = queue.stats
    assert stats.tasks_cancelled == 1 and stats.tasks_done == 20 + 20


@pytest.mark.faults
def test_a_pack_whose_worker_is_killed_runs_again_elsewhere(queue, workers):
    victim = workers.start("--cores", "1", "--lease-seconds", "2")
    queue.submit_many([wq.PythonTask(timed_sleep, 0.001) for _ in range(10)])
    drain(queue, 10)
    # the manager takes these for short calls (its pace says ~1 ms): they are packed
    ids = queue.submit_many([wq.PythonTask(timed_sleep, 1.0) for _ in range(3)])
    assert len(set(queue._books.pack_of.get(i) for i in ids)) == 1 and None not in queue._books.pack_of.values()
    assert wait_until(lambda: queue.task_state(ids[0]) == wq.WORK_QUEUE_TASK_RUNNING)
    stats = queue.stats
    assert stats.tasks_running == 3 and stats.tasks_waiting == 0 and stats.committed_cores == 1  # one slot
    time.sleep(0.3)
    victim.send_signal(signal.SIGKILL)  # mid-pack
    victim.wait(10)
    workers.start("--cores", "1", "--lease-seconds", "2")  # its reaper runs every second
    tasks = {t.id: t for t in drain(queue, 3, timeout=60)}
    assert sorted(tasks) == sorted(ids)
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS and t.output[2] == str(t.id) for t in tasks.values())
    assert queue.stats.tasks_requeued >= 1 and queue.empty()


def test_slow_or_unknown_functions_and_signed_queues_are_never_packed(queue, workers, redis_url, queue_name):
    workers.start("--cores", "1")
    queue.submit_many([wq.PythonTask(timed_sleep, 0.02) for _ in range(3)])
    drain(queue, 3)
    queue.submit_many([wq.PythonTask(timed_sleep, 0.02) for _ in range(3)])
    assert not queue._books.pack_of  # 20 ms a call: a pack would hold one slot too long
    drain(queue, 3)
    assert queue.empty()
    with wq.WorkQueue(queue_name, redis_url=redis_url, secret="s3cret") as signed:
        _learn_pace(signed)
        signed.submit_many([wq.PythonTask(member_probe, i) for i in range(20)])
        assert not signed._books.pack_of
        drain(signed, 20)
        assert signed.empty()
    with wq.WorkQueue(queue_name, redis_url=redis_url, enforce_limits=True) as watched:
        _learn_pace(watched)
        watched.submit_many([wq.PythonTask(member_probe, i) for i in range(20)])
        assert not watched._books.pack_of  # limits are watched per task
        drain(watched, 20)


def test_another_manager_takes_over_a_packed_queue(queue, workers, redis_url, queue_name):
    workers.start("--cores", "1")
    _learn_pace(queue)
    workers.stop_all()
    ids = queue.submit_many([wq.PythonTask(member_probe, i) for i in range(50)])
    assert queue._books.pack_of
    queue._buffer.flush()
    with wq.WorkQueue(queue_name, redis_url=redis_url) as other:  # the first manager died
        workers.start("--cores", "1")
        tasks = drain(other, 50)
        assert sorted(t.id for t in tasks) == sorted(ids)
        assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS and t.output[1] == str(t.id) for t in tasks)


def test_planner_packs_only_what_shares_everything_but_arguments():
    planner = PackPlanner()
    fn_fast, fn_slow = b"f" * 32, b"s" * 32
    planner._pace = {fn_fast: Pace(0.25, 1e-5), fn_slow: Pace(0.25, 1.0)}
    tasks = [wq.PythonTask(member_probe, i) for i in range(PACK_TASKS + 10)]
    rows = [(i, "c1.m0.d0.g0|", 0.0, {"sub": 1, "fn": fn_fast, "args": b"a%d" % i}) for i in range(len(tasks))]
    rows[3] = (3, "c1.m0.d0.g0|", 0.0, {"sub": 1, "fn": fn_slow})  # slow: its own task
    rows[4] = (4, "c1.m0.d0.g0|", 5.0, {"sub": 1, "fn": fn_fast})  # another priority: another pack
    next_id = iter(range(1000, 2000))
    out, packs = planner.pack(rows, tasks, lambda: next(next_id))
    by_id = {row[0]: row for row in out}
    assert 3 in by_id and 4 in by_id  # alone: not packed
    assert sorted(len(m) for m in packs.values()) == [len(tasks) - 2 - PACK_TASKS, PACK_TASKS]
    for pack_id, members in packs.items():
        fields = by_id[pack_id][3]
        assert fields["n"] == len(members) and fields["fn"] == fn_fast and "args" not in fields
        assert load(fields["pa"]) == [(m, b"a%d" % m) for m in members]
    assert sorted([m for ms in packs.values() for m in ms] + [3, 4]) == list(range(len(tasks)))


def test_a_member_cancelled_before_its_pack_starts_never_runs(queue, workers, tmp_path):
    log = str(tmp_path / "runs.log")
    workers.start("--cores", "1")
    queue.submit_many([wq.PythonTask(logged_work, log, 0, i) for i in range(20)])
    drain(queue, 20)
    assert queue.empty()
    workers.stop_all()
    ids = queue.submit_many([wq.PythonTask(logged_work, log, 0, i) for i in range(30)])
    assert len(set(queue._books.pack_of.get(i) for i in ids)) < 10
    victims = {ids[2], ids[17]}
    for victim in victims:
        assert queue.cancel_by_taskid(victim).id == victim
    open(log, "w").close()
    workers.start("--cores", "1")
    tasks = drain(queue, 28)
    assert {t.id for t in tasks} == set(ids) - victims
    assert sorted(int(i) for i in open(log).read().split()) == sorted(set(ids) - victims)  # each ran once
    assert queue.wait(1) is None and queue.empty()
    assert queue.stats.tasks_cancelled == 2


def test_pack_values_are_read_as_plain_data_only():
    assert load(dump([(1, b"x", {b"r": b"0"})])) == [(1, b"x", {b"r": b"0"})]
    with pytest.raises(pickle.UnpicklingError):
        load(pickle.dumps(os.system))  # would name (and so import) a callable


def test_a_pack_over_64_kib_of_arguments_keeps_them_beside_its_hash(queue, workers, redis_url, queue_name):
    from helpers_tasks import sized_probe

    workers.start("--cores", "1")
    queue.submit_many([wq.PythonTask(sized_probe, i, b"x" * 900) for i in range(20)])
    drain(queue, 20)
    assert queue.empty()
    workers.stop_all()
    ids = queue.submit_many([wq.PythonTask(sized_probe, i, b"y" * 900) for i in range(300)])
    queue._buffer.flush()
    client = redis.Redis.from_url(redis_url)
    assert any(key.endswith(b":pa") for key in client.keys(QueueKeys(queue_name).prefix + "t:*"))
    workers.start("--cores", "1")
    tasks = {t.id: t for t in drain(queue, 300)}
    assert all(tasks[task_id].output[0] == i and tasks[task_id].output[2] == 900 for i, task_id in enumerate(ids))
    assert queue.empty() and _task_keys(redis_url, queue_name) == []


def test_an_unreadable_pack_fails_its_tasks_and_blocks_nothing(queue, workers, redis_url, queue_name):
    workers.start("--cores", "1")
    _learn_pace(queue)
    workers.stop_all()
    ids = queue.submit_many([wq.PythonTask(member_probe, i) for i in range(10)])
    pack_id = queue._books.pack_of[ids[0]]
    queue._buffer.flush()
    client = redis.Redis.from_url(redis_url)
    client.hset(QueueKeys(queue_name).task(pack_id), "pa", pickle.dumps(os.system))  # not ours: names a callable
    later = queue.submit(wq.PythonTask(member_probe, 99))
    workers.start("--cores", "1")
    tasks = {t.id: t for t in drain(queue, 11)}
    assert tasks[later].output == (99, str(later))
    for task_id in ids:
        assert tasks[task_id].result != wq.WORK_QUEUE_RESULT_SUCCESS
    assert queue.wait(1) is None and queue.empty()
