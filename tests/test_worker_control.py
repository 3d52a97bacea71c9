"""WorkQueue.shutdown_workers and block_host, on Work Queue's terms, with real workers:
only idle workers are asked to exit (the count asked is returned), and workers of a blocked
host take no task of the queue until it is unblocked, while what they run finishes."""

from __future__ import annotations

import os
import socket

from conftest import wait_until

import wq_redis as wq


def _workers(queue):
    return queue.status("workers")


def test_shutdown_workers_asks_only_idle_workers_and_they_exit(queue, workers):
    busy = workers.start("--cores", "1", "--name", "busy")
    assert wait_until(lambda: len(queue.status("workers")) == 1)
    release = wq.Task("while [ ! -e $GO ]; do sleep 0.05; done")
    go = f"/tmp/wq-redis-shutdown-{queue.name}"
    release.specify_environment_variable("GO", go)
    queue.submit(release)
    assert wait_until(lambda: _workers(queue)[0]["tasks_running"] == 1)
    idle = [workers.start("--cores", "1", "--name", f"idle{i}") for i in range(2)]
    assert wait_until(lambda: len(queue.status("workers")) == 3)

    assert queue.shutdown_workers(1) == 1  # one of the two idle workers; the busy one is never asked
    assert wait_until(lambda: sum(p.poll() is not None for p in idle) == 1)
    assert queue.shutdown_workers(0) == 1  # 0: all (idle) ones, as in Work Queue: the other idle worker
    assert wait_until(lambda: all(p.poll() == 0 for p in idle))
    assert busy.poll() is None

    open(go, "w").close()
    try:
        done = queue.wait(30)
        assert done is not None and done.result == wq.WORK_QUEUE_RESULT_SUCCESS
        assert wait_until(lambda: _workers(queue)[0]["tasks_running"] == 0)
        assert queue.shutdown_workers(5) == 1
        assert busy.wait(10) == 0
    finally:
        os.unlink(go)
    assert queue.shutdown_workers(0) == 0  # nobody left


def test_a_blocked_host_takes_no_task_until_unblocked(queue, workers):
    host = socket.gethostname()
    workers.start("--cores", "1")
    first = wq.Task("echo before")
    queue.submit(first)
    task = queue.wait(30)
    assert task is not None and task.hostname == host

    queue.block_host(task.hostname)
    assert queue.blocked_hosts() == [host]
    assert wait_until(lambda: _workers(queue)[0]["blocked"])
    queue.submit(wq.Task("echo while blocked"))
    assert queue.wait(2) is None  # the only worker is on the blocked host
    assert queue.stats.tasks_running == 0

    queue.unblock_host(host)
    assert queue.blocked_hosts() == []
    late = queue.wait(30)
    assert late is not None and late.std_output == "while blocked\n"


def test_a_block_with_a_timeout_ends_by_itself_and_blacklist_names_the_same_calls(queue, workers):
    host = socket.gethostname()
    queue.blacklist_with_timeout(host, 1)
    assert queue.blocked_hosts() == [host]
    assert wait_until(lambda: queue.blocked_hosts() == [], timeout=5)  # Redis' clock passed its end
    queue.blacklist("elsewhere")
    queue.block_host("another")
    assert queue.blocked_hosts() == ["another", "elsewhere"]
    queue.blacklist_clear("another")
    assert queue.blocked_hosts() == ["elsewhere"]
    queue.unblock_host()  # all of them
    assert queue.blocked_hosts() == []
    workers.start("--cores", "1")
    queue.submit(wq.Task("true"))
    assert queue.wait(30) is not None  # the timed block is over for this host's worker
