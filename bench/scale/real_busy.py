"""Redis CPU per task with N real workers: ``python -m bench.scale.real_busy --workers 4,100``.

Starts a Redis server on a free loopback port and, for each count, that many real ``wq-redis
worker --cores 1`` processes; waits ``--idle-seconds`` (long enough that every worker has
finished its first wait for work: all are awake and take part), then submits ``--tasks``
tasks with ``submit_many`` and waits for all of them. Prints tasks/s, Redis CPU per task
(INFO ``used_cpu_sys`` + ``used_cpu_user`` from the first submit to the last ``wait()``) and
the commands Redis ran per task. ``--delay S`` makes every task sleep S seconds, so that
claims bring one task each whatever the pool (a worker claims about 20 ms of work at once):
then the figures compare pools at equal batches. This complements ``bench.scale.run``, whose
simulated workers run nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import redis

import wq_redis as wq
from bench import tasks
from wq_redis.embedded.server import RedisServer

QUEUE = "busy"
SUBMIT_BATCH = 1000
READY_SECONDS = 300.0


def measure(url: str, workers: int, total: int, idle_seconds: float, delay: float) -> str:
    client = redis.Redis.from_url(url)
    client.flushall()
    queue = wq.WorkQueue(QUEUE, redis_url=url)
    argv = [sys.executable, "-m", "wq_redis", "worker", "--redis-url", url, "--queue", QUEUE, "--cores", "1"]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(workers)
    ]
    try:
        deadline = time.monotonic() + READY_SECONDS
        while int(client.zcard(f"wq:{{{QUEUE}}}:workers")) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not all register within {READY_SECONDS:.0f} s")
            time.sleep(0.5)
        time.sleep(idle_seconds)
        client.config_resetstat()
        before, started = client.info(), time.monotonic()
        for start in range(0, total, SUBMIT_BATCH):
            count = min(SUBMIT_BATCH, total - start)
            if delay:
                queue.submit_many([wq.PythonTask(tasks.whoami, delay) for _ in range(count)])
            else:
                queue.submit_many([wq.PythonTask(tasks.noop) for _ in range(count)])
        for done in range(total):
            if queue.wait(60) is None:
                raise TimeoutError(f"only {done} of {total} tasks came back")
        seconds = time.monotonic() - started
        after, stats = client.info(), client.info("commandstats")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        queue.close()
        client.close()
    cpu = sum(after[k] - before[k] for k in ("used_cpu_sys", "used_cpu_user"))
    busiest = sorted(stats.items(), key=lambda kv: -kv[1]["calls"])[:8]
    per_task = ", ".join(f"{name.removeprefix('cmdstat_')} {value['calls'] / total:.2f}" for name, value in busiest)
    return (
        f"{workers} workers, {total} tasks{f' of {delay:g} s' if delay else ''}: {total / seconds:,.0f} tasks/s, "
        f"Redis {cpu / total * 1e6:.1f} us/task; commands per task: {per_task}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.real_busy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="4,100")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--idle-seconds", type=float, default=40.0, help="after the workers registered")
    parser.add_argument("--delay", type=float, default=0.0, help="each task sleeps this long (0: no-op tasks)")
    parser.add_argument("--server", default=os.environ.get("WQ_SCALE_REDIS_SERVER"), help="redis-server binary")
    args = parser.parse_args(argv)
    server = RedisServer(binary=args.server, extra_args=["--appendonly", "no"]).start()
    try:
        for count in [int(x) for x in args.workers.split(",") if x.strip()]:
            print(measure(server.url, count, args.tasks, args.idle_seconds, args.delay), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
