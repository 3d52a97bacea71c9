"""The failover tests' run, shared by Sentinel (tests/test_sentinel.py) and Cluster
(tests/test_cluster.py): logged tasks on two workers, a failover started once a quarter
are back, and what the issue asks of it measured and checked: every task back once with
the right output (tasks lost: 0), executions beyond one at most the leases held before the
failover, and the time from the failover to the first task completed after it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conftest import Workers
from failover_tasks import stamped_work

import wq_redis as wq


@dataclass
class FailoverRun:
    """What a run saw: the tasks, each task id's execution starts (the tasks' own log),
    the tasks as they came back (with when), when the failover began and when the new
    master (primary) took writes, and the most leases held at once before the failover."""

    tasks: list[wq.Task] = field(default_factory=list)
    runs: dict[str, list[float]] = field(default_factory=dict)
    received: list[tuple[float, wq.Task]] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    held: int = 0

    def check(self, scenario: str, resume_bound: float | None = None, progress_during: bool = False) -> None:
        """Print the figures the issue asks for, then assert them.  A task runs again where
        the failover lost its claim or its completion (written to the old master after the
        promotion): the clients stop writing there when the failover starts, so only the
        leases held then can be redone.  ``progress_during``: tasks came back while the
        failover was under way (a sharded queue whose other partitions go on)."""
        ids = Counter(t.id for _, t in self.received)
        lost = len({t.id for t in self.tasks} - set(ids))
        twice = [i for i, n in ids.items() if n > 1]
        beyond = sum(len(starts) - 1 for starts in self.runs.values())
        failover, promoted = self.times["failover"], self.times["promoted"]
        after = [at for at, _ in self.received if at > promoted]
        resumed = after[0] - failover if after else float("inf")
        during = sum(1 for at, _ in self.received if failover < at <= promoted)
        print(
            f"\n{scenario}: tasks lost {lost}, returned twice {len(twice)}, executions beyond one {beyond} "
            f"(most leases held at once before the failover: {self.held}), new master took writes after "
            f"{promoted - failover:.2f} s (tasks back meanwhile: {during}), first completion after that at "
            f"{resumed:.2f} s from the failover"
        )
        assert lost == 0 and not twice
        assert sorted(t.output for _, t in self.received) == list(range(len(self.tasks)))
        assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS for _, t in self.received)
        assert beyond <= self.held, f"{beyond} executions beyond one, more than the {self.held} leases held"
        if progress_during:
            assert during > 0, "no task came back while the failover was under way"
        if resume_bound is not None:
            assert resumed <= resume_bound, f"work resumed {resumed:.2f} s after the failover (bound {resume_bound} s)"


def run_through(
    url: str,
    queue_name: str,
    log: Path,
    fail_over: Callable[[], None],
    wait_moved: Callable[[], object],
    leases_held: Callable[[], int],
    count: int = 800,
    shards: int | None = None,
) -> FailoverRun:
    """``count`` tasks of 10 ms, each logging its start to ``log``, on two workers of two
    cores (5 s leases) through ``url``; once a quarter are back, ``fail_over()`` then
    ``wait_moved()`` (until the new master takes writes) in a thread.  ``leases_held()``
    is read every 10 ms until the failover."""
    run = FailoverRun()
    pool = Workers(url, queue_name)
    watching = threading.Event()

    def count_leases() -> None:
        while not watching.is_set():
            run.held = max(run.held, leases_held())
            time.sleep(0.01)

    def failover() -> None:
        watching.set()
        counter.join(5)
        run.times["failover"] = time.monotonic()
        fail_over()
        wait_moved()
        run.times["promoted"] = time.monotonic()

    counter = threading.Thread(target=count_leases, daemon=True)
    try:
        with wq.WorkQueue(queue_name, redis_url=url, shards=shards) as q:
            for _ in range(2):
                pool.start("--cores", "2", "--lease-seconds", "5")
            run.tasks = [wq.PythonTask(stamped_work, str(log), 0.01, i) for i in range(count)]
            for task in run.tasks:
                task.specify_cores(1)
            q.submit_many(run.tasks)
            counter.start()
            thread = None
            deadline = time.monotonic() + 180
            while len(run.received) < count and time.monotonic() < deadline:
                task = q.wait(1)
                if task is not None:
                    run.received.append((time.monotonic(), task))
                if thread is None and len(run.received) >= count // 4:
                    thread = threading.Thread(target=failover)
                    thread.start()
            assert thread is not None
            thread.join(60)
            assert q.empty()
    finally:
        watching.set()
        pool.stop_all()
    for line in log.read_text().splitlines():
        task_id, started = line.split()
        run.runs.setdefault(task_id, []).append(float(started))
    return run
