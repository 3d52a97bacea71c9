"""The warm child's cost: a fresh worker's time to first task, the child's RSS and modules.

Usage (from a checkout; PYTHONPATH picks the code measured, also in the worker it starts):
    PYTHONPATH=$PWD .venv/bin/python -m bench.child_probe [--runs 5]
To compare with an older commit, run it from a worktree of that commit with its PYTHONPATH.

(a) time to first task: a no-op PythonTask is submitted, then a fresh
    ``python -m wq_redis worker --cores 1`` is started; the time from its start to the task's
    result, median of --runs fresh workers (embedded Redis, wq_redis.embedded.server).
(b) the worker's warm child once idle: its RSS (psutil), and what a task sees in sys.modules,
    the first task (run before any lane) and one submitted once the worker idles (with
    --cores 1 and no secret the idle worker's child claims in its fast lane: redis-py is in);
(c) a bare ``python -m wq_redis.worker.child``'s import: its module count and which of ours
    and of the heavy third-party packages it loads (what every warm child pays before a task).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import psutil

import wq_redis as wq
from wq_redis.embedded.server import RedisServer

HEAVY = ("redis", "cloudpickle", "click", "rich", "prometheus_client", "psutil", "hiredis")
BARE_CHILD_IMPORT = (
    "import runpy, sys; sys.argv = ['child']; "
    "runpy.run_module('wq_redis.worker.child', run_name='probe'); "  # imports what -m would, without serving
    "print(len(sys.modules)); print(' '.join(sorted(sys.modules)))"
)


def noop() -> None:
    return None


def loaded_modules() -> list[str]:
    import sys

    return sorted(sys.modules)


def start_worker(url: str, queue: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "wq_redis", "worker", "--redis-url", url, "--queue", queue, "--cores", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(10)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def time_to_first_task(url: str, run: int) -> float:
    with wq.WorkQueue(f"probe{run}", redis_url=url) as queue:
        queue.submit(wq.PythonTask(noop))
        started = time.perf_counter()
        worker = start_worker(url, f"probe{run}")
        try:
            task = queue.wait(60)
            elapsed = time.perf_counter() - started
            assert task is not None and task.result == wq.WORK_QUEUE_RESULT_SUCCESS, task and task.std_output
        finally:
            stop(worker)
    return elapsed


def idle_child(url: str) -> tuple[int, list[str], list[str]]:
    """(RSS bytes of the worker's warm child(ren) once idle, summed; the modules a first task
    saw there, before any lane; those a task saw once the idle worker handed its wait to the
    child's fast lane)."""
    with wq.WorkQueue("probe-idle", redis_url=url) as queue:
        worker = start_worker(url, "probe-idle")
        try:
            seen = []
            for _ in range(2):
                queue.submit(wq.PythonTask(loaded_modules))
                task = queue.wait(60)
                assert task is not None and isinstance(task.output, list), task and task.std_output
                seen.append(task.output)
                time.sleep(1.0)  # idle: the child blocks in its lane (or waits for a message)
            children = [
                p
                for p in psutil.Process(worker.pid).children(recursive=True)
                if "wq_redis.worker.child" in " ".join(p.cmdline())
            ]
            rss = sum(p.memory_info().rss for p in children)
            return rss, seen[0], seen[1]
        finally:
            stop(worker)


def bare_child_import() -> list[str]:
    out = subprocess.run([sys.executable, "-c", BARE_CHILD_IMPORT], capture_output=True, text=True, check=True)
    return out.stdout.split("\n")[1].split()


def summary(modules: list[str]) -> str:
    ours = sorted(m for m in modules if m.startswith("wq_redis"))
    heavy = sorted({m.split(".")[0] for m in modules if m.split(".")[0] in HEAVY})
    return f"{len(modules)} modules; heavy: {heavy}; ours ({len(ours)}): {ours}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("code:", os.path.dirname(os.path.dirname(os.path.abspath(wq.__file__))))
    server = RedisServer().start()
    try:
        times = [time_to_first_task(server.url, run) for run in range(args.runs)]
        print(
            f"time to first task: median {statistics.median(times) * 1000:.0f} ms of",
            [f"{t * 1000:.0f}" for t in times],
        )
        rss, first, in_lane = idle_child(server.url)
        print(f"idle warm child RSS (in its lane): {rss / 2**20:.1f} MiB")
        print("modules a first task sees in the child:", summary(first))
        print("modules a task sees in the child's fast lane:", summary(in_lane))
        print("bare child import (python -m wq_redis.worker.child):", summary(bare_child_import()))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
