"""Fault injection with real processes: kill, pause and restart workers and Redis, then
check the books: every task back exactly once with the right result, nothing left over."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import pytest
import redis
from conftest import drain, wait_until
from helpers_tasks import logged_work, my_sum

import wq_redis as wq

pytestmark = pytest.mark.faults
LEASE = "1"


def submit_logged(queue, log_path, count, seconds):
    tasks = [wq.PythonTask(logged_work, str(log_path), seconds, i) for i in range(count)]
    for task in tasks:
        task.specify_cores(1)  # many at once on a worker (declaring nothing takes a whole worker)
    queue.submit_many(tasks)
    return tasks


def check_books(queue, client, tasks, done):
    """Each task came back once with its own result, and Redis holds nothing of it."""
    ids = Counter(t.id for t in done)
    assert all(n == 1 for n in ids.values()), f"tasks returned twice: {[i for i, n in ids.items() if n > 1]}"
    assert set(ids) == {t.id for t in tasks}
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in done), [t.error for t in done if t.result]
    assert sorted(t.output for t in done) == list(range(len(tasks)))
    assert queue.empty()  # also acknowledges the last batch taken
    k = queue._store.keys
    assert client.zcard(k.leases) == 0
    assert client.llen(k.done) == 0
    assert not client.keys(k.prefix + "ready:*")
    assert not client.keys(k.prefix + "t:*")
    assert client.scard(k.retrieving) == 0


def executions(log_path):
    return Counter(log_path.read_text().split()) if log_path.exists() else Counter()


def test_sigkill_worker_mid_run_another_finishes(queue, workers, redis_url, tmp_path):
    log = tmp_path / "runs.log"
    client = redis.Redis.from_url(redis_url)
    victim = workers.start("--cores", "20", "--lease-seconds", LEASE, "--name", "victim")
    tasks = submit_logged(queue, log, 20, 1.5)
    assert wait_until(lambda: queue.stats.tasks_running == 20, timeout=20)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    workers.start("--cores", "20", "--lease-seconds", LEASE, "--name", "rescuer")
    done = drain(queue, 20, timeout=60)
    check_books(queue, client, tasks, done)
    assert all(t.total_submissions == 2 and t.worker.startswith("rescuer@") for t in done)
    assert queue.stats.tasks_requeued == 20


def test_paused_worker_loses_its_lease_and_its_late_result_is_dropped(queue, workers, redis_url, tmp_path):
    log = tmp_path / "runs.log"
    client = redis.Redis.from_url(redis_url)
    sleeper = workers.start("--cores", "1", "--lease-seconds", LEASE, "--name", "sleeper")
    tasks = submit_logged(queue, log, 1, 1.0)
    assert wait_until(lambda: len(executions(log)) == 1)  # the task itself has started
    sleeper.send_signal(signal.SIGSTOP)  # the task itself (another process) runs on and finishes
    try:
        workers.start("--cores", "1", "--lease-seconds", LEASE, "--name", "other")
        done = drain(queue, 1, timeout=30)
        assert done[0].worker.startswith("other@")
    finally:
        sleeper.send_signal(signal.SIGCONT)
    # the paused worker wakes, tries to deliver (or sees its lease gone); either way its
    # result must not reach the manager a second time
    time.sleep(3)
    assert queue.wait(0.5) is None
    check_books(queue, client, tasks, done)
    assert executions(log)[str(tasks[0].id)] == 2
    assert queue.stats.tasks_late_results <= 1


def test_client_kill_of_worker_connections_loses_nothing(queue, workers, redis_url, tmp_path):
    log = tmp_path / "runs.log"
    client = redis.Redis.from_url(redis_url)
    workers.start("--cores", "4", "--lease-seconds", "2")
    tasks = submit_logged(queue, log, 60, 0.2)
    assert wait_until(lambda: queue.stats.workers_connected == 1)
    done = []
    kills = 0
    deadline = time.monotonic() + 60
    own = str(client.client_id())
    next_round = 0.0
    while len(done) < 60 and time.monotonic() < deadline:
        if time.monotonic() >= next_round:  # every 0.4 s, cut every connection but this one
            next_round = time.monotonic() + 0.4
            for entry in client.client_list():
                if entry["id"] != own:
                    try:
                        kills += client.client_kill_filter(_id=entry["id"])
                    except redis.ResponseError:
                        pass
        task = queue.wait(0.1)
        if task is not None:
            done.append(task)
    assert kills >= 3, "the test must actually cut connections"
    check_books(queue, client, tasks, done)


def test_redis_sigkill_and_aof_restart_loses_no_task(restartable_redis, queue_name, tmp_path):
    from conftest import Workers

    log = tmp_path / "runs.log"
    server = restartable_redis
    pool = Workers(server.url, queue_name)
    try:
        with wq.WorkQueue(queue_name, redis_url=server.url) as queue:
            tasks = submit_logged(queue, log, 30, 0.2)
            pool.start("--cores", "3", "--lease-seconds", "2")
            time.sleep(1.5)  # appendfsync everysec: what was acknowledged is now on disk
            server.kill()
            unfinished = 30 - len(set(executions(log)))
            time.sleep(1.0)
            server.restart()
            done = drain(queue, 30, timeout=90)
            assert unfinished > 0, "Redis must die in the middle of the run"
            client = redis.Redis.from_url(server.url)
            check_books(queue, client, tasks, done)
    finally:
        pool.stop_all()


def test_soak_workers_killed_and_restarted_at_random(queue, workers, redis_url, tmp_path):
    """Soak: WQ_SOAK_TASKS tasks (default 300 in CI; 10,000 makes a ~10 minute run)."""
    count = int(os.environ.get("WQ_SOAK_TASKS", "300"))
    log = tmp_path / "runs.log"
    client = redis.Redis.from_url(redis_url)
    rng = random.Random(7)
    tasks = submit_logged(queue, log, count, 0.05)
    live = [workers.start("--cores", "2", "--lease-seconds", LEASE) for _ in range(3)]
    kills = 0
    done: list[wq.Task] = []
    deadline = time.monotonic() + max(120, count * 0.2)
    next_kill = time.monotonic() + rng.uniform(0.3, 1.0)
    while len(done) < count:
        assert time.monotonic() < deadline, f"soak stalled: {len(done)} of {count} back"
        task = queue.wait(0.2)
        if task is not None:
            done.append(task)
        if time.monotonic() >= next_kill and len(done) < count * 0.9:
            victim = live.pop(rng.randrange(len(live)))
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            kills += 1
            live.append(workers.start("--cores", "2", "--lease-seconds", LEASE))
            next_kill = time.monotonic() + rng.uniform(0.3, 1.0)
    runs = executions(log)
    duplicated = sum(n - 1 for n in runs.values() if n > 1)
    lost = count - len({t.id for t in done})
    print(
        f"\nsoak: submitted={count} completed={len(done)} worker_kills={kills} "
        f"duplicated_executions={duplicated} lost={lost}"
    )
    check_books(queue, client, tasks, done)
    assert lost == 0


def test_cpu_bound_task_longer_than_its_lease_runs_once(queue, workers, redis_url):
    from helpers_tasks import busy

    workers.start("--cores", "2", "--lease-seconds", "1")
    tasks = [wq.PythonTask(busy, 4.0) for _ in range(2)]
    queue.submit_many(tasks)
    done = drain(queue, 2, timeout=60)
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS and t.total_submissions == 1 for t in done)
    stats = queue.stats
    assert (stats.tasks_requeued, stats.tasks_late_results) == (0, 0)


def test_segfault_is_signal_and_the_worker_goes_on(queue, workers):
    from helpers_tasks import segfault

    workers.start("--cores", "1")
    queue.submit(wq.PythonTask(segfault))
    task = queue.wait(30)
    assert task.result == wq.WORK_QUEUE_RESULT_SIGNAL and task.return_status == signal.SIGSEGV
    queue.submit(wq.PythonTask(sum, [1, 2]))
    assert queue.wait(30).output == 3


def test_a_crashed_manager_process_is_replaced_by_a_new_one(redis_url, queue_name, workers, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "manager.py"
    script.write_text(
        "import os, sys, wq_redis as wq\n"
        "from helpers_tasks import my_sum\n"
        f"q = wq.WorkQueue({queue_name!r}, redis_url={redis_url!r})\n"
        "q.submit_many([wq.PythonTask(my_sum, i, 100) for i in range(20)])\n"
        "os.kill(os.getpid(), 9)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    assert subprocess.run([sys.executable, str(script)], env=env).returncode == -9
    workers.start("--cores", "2")
    with wq.WorkQueue(queue_name, redis_url=redis_url) as queue:
        done = drain(queue, 20)
        assert sorted(t.output for t in done) == [i + 100 for i in range(20)]
        assert queue.empty()


def test_a_manager_that_dies_after_taking_results_leaves_them_for_the_next(redis_url, queue_name, workers):
    from helpers_tasks import my_sum

    workers.start("--cores", "2")
    first = wq.WorkQueue(queue_name, redis_url=redis_url)
    first.submit_many([wq.PythonTask(my_sum, i, 0) for i in range(10)])
    assert wait_until(lambda: first.stats.tasks_with_results == 10)
    assert first.wait(5) is not None  # it took the whole batch from Redis, returned one...
    first._unacked.clear()  # ...and died before acknowledging any of it
    first._client.close()
    with wq.WorkQueue(queue_name, redis_url=redis_url) as second:
        assert sorted(t.output for t in drain(second, 10)) == list(range(10))


def test_redis_memory_does_not_grow_with_finished_tasks(queue, workers, redis_url):
    from helpers_tasks import my_sum

    client = redis.Redis.from_url(redis_url)
    workers.start("--cores", "2")
    for round_ in range(3):
        queue.submit_many([wq.PythonTask(my_sum, i, round_) for i in range(200)])
        drain(queue, 200)
        assert queue.empty()
        keys = {k.decode().split(":", 2)[2].split(":")[0] for k in client.keys(f"wq:{{{queue.name}}}:*")}
        # only the fixed keys of the queue (and the one function) remain, whatever the volume
        assert keys <= {
            "seq",
            "stats",
            "wake",
            "workers",
            "w",
            "ww",
            "reaper",
            "fn",
            "done",
            "queues",
            "incarnation",
        }, keys
        assert len(client.keys(f"wq:{{{queue.name}}}:*")) <= 13


def test_keep_results_keeps_retrieved_tasks_for_their_ttl(redis_url, queue_name, workers):
    from helpers_tasks import my_sum

    workers.start("--cores", "1")
    with wq.WorkQueue(queue_name, redis_url=redis_url, keep_results=60) as queue:
        task_id = queue.submit(wq.PythonTask(my_sum, 1, 1))
        assert queue.wait(30).output == 2
        assert queue.empty()
        client = redis.Redis.from_url(redis_url)
        key = queue._store.keys.task(task_id)
        assert client.hget(key, "s") == b"4" and 0 < client.ttl(key) <= 60


def _wipe_data(server) -> None:
    """Stop Redis and delete its data files: it comes back empty (as without persistence)."""
    server.stop()
    for name in os.listdir(server.data_dir):
        path = os.path.join(server.data_dir, name)
        if name != "server.log":
            if os.path.isdir(path):
                import shutil

                shutil.rmtree(path)
            else:
                os.remove(path)


def test_redis_restarted_without_its_data_the_manager_resubmits_what_it_holds(
    restartable_redis, queue_name, tmp_path, caplog
):
    import logging

    from conftest import Workers

    log = tmp_path / "runs.log"
    source = tmp_path / "in.txt"
    source.write_text("cached input\n")
    server = restartable_redis
    pool = Workers(server.url, queue_name)
    try:
        with wq.WorkQueue(queue_name, redis_url=server.url) as queue:
            tasks = submit_logged(queue, log, 30, 0.2)
            command = wq.Task("cat in.txt")
            command.specify_input_file(str(source), "in.txt", cache=True)
            queue.submit(command)
            pool.start("--cores", "3", "--lease-seconds", "2")
            done = drain(queue, 5, timeout=60)
            _wipe_data(server)
            server.start()
            with caplog.at_level(logging.WARNING, logger="wq_redis.client.queue"):
                done += drain(queue, 26, timeout=90)
                assert queue.empty()
            assert "lost the state" in caplog.text and "resubmitt" in caplog.text
            assert sorted(t.id for t in done) == sorted([t.id for t in tasks] + [command.id])
            assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in done), [t.error for t in done if t.result]
            assert command.output == "cached input\n"
            assert sorted(t.output for t in done if t is not command) == list(range(30))
    finally:
        pool.stop_all()


def test_tasks_submitted_after_redis_lost_its_data_and_before_any_wait_come_back(
    restartable_redis, queue_name, tmp_path, caplog
):
    """Between Redis losing its data and the manager's next retrieve, the manager still
    believes its function bodies and cached files stored: submit.lua refuses the first
    submit after the loss (the incarnation is gone; here submit_many's), and the manager
    recovers before anything is queued.  The workers start after the loss: none holds the
    function or the file in its own cache."""
    import logging

    from conftest import Workers

    source = tmp_path / "in.txt"
    source.write_text("cached input\n")
    offset = len(queue_name)
    add = lambda x: x + offset  # noqa: E731 (pickled by value: its body lives only at fn:DIGEST in Redis)

    def cat_input() -> wq.Task:
        task = wq.Task("cat in.txt")
        task.specify_input_file(str(source), "in.txt", cache=True)
        return task

    server = restartable_redis
    client = redis.Redis.from_url(server.url)
    pool = Workers(server.url, queue_name)
    try:
        with wq.WorkQueue(queue_name, redis_url=server.url) as queue:
            before = [wq.PythonTask(add, 0), cat_input()]
            queue.submit_many(before)  # the function and the file are stored
            assert queue.files_uploaded == 1
            _wipe_data(server)
            server.start()
            pool.start("--cores", "2", "--lease-seconds", "2")
            assert wait_until(lambda: client.zcard(queue._store.keys.workers) == 1, timeout=30)
            with caplog.at_level(logging.WARNING, logger="wq_redis.client.queue"):
                batch = [wq.PythonTask(add, i) for i in range(1, 6)] + [cat_input()]
                queue.submit_many(batch)
                buffered = [wq.PythonTask(add, i) for i in range(6, 11)]
                for task in buffered:
                    queue.submit(task)
                # the workers run them before the manager's next retrieve (which would notice the loss)
                assert wait_until(lambda: client.llen(queue._store.keys.done) >= len(batch), timeout=30)
                done = drain(queue, 13, timeout=90)
                assert queue.empty()
            assert "lost the state" in caplog.text
            assert Counter(t.id for t in done) == Counter(t.id for t in before + batch + buffered)  # each once
            assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in done), [t.error for t in done if t.result]
            assert sorted(t.output for t in done if t.command != "cat in.txt") == [i + offset for i in range(11)]
            assert before[1].output == batch[-1].output == "cached input\n"
            assert queue.files_uploaded == 2  # stored again once, for both
    finally:
        pool.stop_all()
        client.close()


def test_submits_sent_by_the_submit_thread_after_redis_lost_its_data_come_back(queue, workers, redis_url):
    """The submit buffer's thread meets the refusal first: it keeps the rows (and does not
    retry them), and the manager's next call recovers; nothing is sent twice."""
    client = redis.Redis.from_url(redis_url)
    offset = len(queue.name)
    add = lambda x: x + offset  # noqa: E731 (pickled by value)
    tasks = [wq.PythonTask(add, 0)]
    queue.submit(tasks[0])
    queue._buffer.flush()  # its function is stored, the task queued
    client.flushall()  # Redis lost its data (as restarted without persistence)
    workers.start("--cores", "1")
    assert wait_until(lambda: client.zcard(queue._store.keys.workers) == 1, timeout=30)
    tasks.append(wq.PythonTask(add, 1))
    queue.submit(tasks[-1])
    assert wait_until(lambda: queue._buffer.held, timeout=10)  # the thread's send was refused
    assert len(queue._buffer) == 1 and not client.exists(queue._store.keys.task(tasks[-1].id))
    for i in range(2, 5):  # the first of these recovers: every task held is resubmitted
        tasks.append(wq.PythonTask(add, i))
        queue.submit(tasks[-1])
    done = drain(queue, 5)
    assert sorted(t.id for t in done) == sorted(t.id for t in tasks)
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in done), [t.error for t in done]
    assert sorted(t.output for t in done) == [i + offset for i in range(5)]
    assert queue.empty()
    assert queue.stats.tasks_submitted == 5  # each queued once in the new state


def test_a_submit_carried_by_a_wait_after_redis_lost_its_data_comes_back(queue, workers, redis_url):
    """The retrieve round trip that carries buffered submits (and then blocks for a
    completion): refused with them, the manager recovers before it hands anything out.
    The worker starts after the loss: it holds no function of its own."""
    client = redis.Redis.from_url(redis_url)
    offset = len(queue.name)
    add = lambda x: x + offset  # noqa: E731 (pickled by value)
    first = wq.PythonTask(add, 0)
    queue.submit(first)  # its function is stored
    assert queue.wait(0.1) is None  # sent; the done list is drained: the next wait blocks in the same round trip
    client.flushall()  # Redis lost its data (as restarted without persistence)
    workers.start("--cores", "1")
    assert wait_until(lambda: client.zcard(queue._store.keys.workers) == 1, timeout=30)
    second = wq.PythonTask(add, 1)
    queue._buffer._carried_at = time.monotonic()  # as right after a wait(): the next wait() carries this submit
    queue.submit(second)
    done = drain(queue, 2)
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for t in done), [t.error for t in done]
    assert sorted((t.id, t.output) for t in done) == [(first.id, offset), (second.id, 1 + offset)]
    assert queue.empty()


def test_a_redis_outage_shorter_than_reconnect_timeout_loses_nothing(restartable_redis, queue_name, tmp_path):
    import threading

    from conftest import Workers

    log = tmp_path / "runs.log"
    server = restartable_redis
    pool = Workers(server.url, queue_name)
    comeback = threading.Timer(3.0, server.start)
    try:
        with wq.WorkQueue(queue_name, redis_url=server.url, reconnect_timeout=60) as queue:
            tasks = submit_logged(queue, log, 20, 0.2)
            pool.start("--cores", "2", "--lease-seconds", "2")
            done = drain(queue, 3, timeout=60)
            server.stop()  # its data stays: an outage, not a loss
            comeback.start()
            queue.submit(wq.PythonTask(logged_work, str(log), 0.0, 20))  # submitted while Redis is away
            done += drain(queue, 18, timeout=90)
            assert sorted(t.output for t in done) == list(range(21))
            assert {t.id for t in done} >= {t.id for t in tasks}
            assert queue.empty()
    finally:
        comeback.cancel()
        comeback.join()
        pool.stop_all()


def test_wait_raises_redis_unavailable_once_reconnect_timeout_has_passed(restartable_redis, queue_name):
    server = restartable_redis
    queue = wq.WorkQueue(queue_name, redis_url=server.url, reconnect_timeout=2)
    try:
        queue.submit(wq.Task("true"))
        server.stop()
        with pytest.raises(wq.RedisUnavailable, match=rf"WorkQueue\('{queue_name}'\)") as raised:
            queue.wait(30)
        assert isinstance(raised.value, ConnectionError)
        assert not isinstance(raised.value, redis.RedisError)
    finally:
        server.start()
        queue.close()


def test_reconnect_timeout_comes_from_the_environment(redis_url, queue_name, monkeypatch):
    monkeypatch.setenv("WQ_RECONNECT_TIMEOUT", "7.5")
    with wq.WorkQueue(queue_name, redis_url=redis_url) as queue:
        assert queue.reconnect_timeout == 7.5
    monkeypatch.delenv("WQ_RECONNECT_TIMEOUT")
    with wq.WorkQueue(queue_name, redis_url=redis_url) as queue:
        assert queue.reconnect_timeout >= 60


@pytest.mark.faults
def test_a_worker_logs_a_redis_outage_once_and_its_end_once(restartable_redis, queue_name, tmp_path):
    from conftest import Workers
    from test_hostile_queues import start_logged_worker

    server = restartable_redis
    pool = Workers(server.url, queue_name)
    log_path = tmp_path / "worker.log"
    try:
        with wq.WorkQueue(queue_name, redis_url=server.url) as queue:
            start_logged_worker(pool, log_path, "--cores", "2")
            queue.submit(wq.PythonTask(my_sum, 1, 2))
            assert drain(queue, 1, timeout=30)[0].output == 3
            # its data stays: an outage of 10 s, longer than redis-py's own retries (about 7 s),
            # so that the worker's claims and heartbeats fail, many times each
            server.stop()
            time.sleep(10)
            server.start()
            queue.submit(wq.PythonTask(my_sum, 3, 4))
            assert drain(queue, 1, timeout=60)[0].output == 7
        logged = log_path.read_text()
        assert logged.count("calls to Redis at redis://") == 1, logged
        assert logged.count("answers again after") == 1, logged
        assert "password" not in logged and "Traceback" not in logged
    finally:
        pool.stop_all()
