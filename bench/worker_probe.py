"""An idle worker's main process: its memory and the modules it loaded.

Usage (from a checkout; PYTHONPATH picks the code measured, also in the worker it starts):
    PYTHONPATH=$PWD .venv/bin/python -m bench.worker_probe [--runs 3]
To compare with an older commit, run it from a worktree of that commit with its PYTHONPATH.

For each command line below, ``python -m wq_redis worker --redis-url URL ARGS`` is started
against an embedded Redis (wq_redis.embedded.server) that nothing else uses, and read once
idle: registered, a connection of it blocked on Redis waiting for work, and a second
later.  Reported: the main process's RSS and USS (psutil; median of --runs fresh workers),
its warm child's RSS (what else an idle worker holds), and, from a second run of the same
command inside a probe that dumps ``sys.modules`` once idle, its module count, how many are
ours and which heavy third-party packages are among them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
import redis

import wq_redis as wq
from wq_redis.embedded.server import RedisServer
from wq_redis.protocol.keys import QueueKeys

QUEUE = "probe"
CONFIGS = (("--cores", "1"), ("--cores", "2", "--gpus", "0"), ("--cores", "1", "--metrics-port", "0"))
HEAVY = ("redis", "click", "cloudpickle", "rich", "prometheus_client", "psutil", "pynvml", "hiredis", "asyncio", "ssl")
IDLE_SECONDS = 60.0
SETTLE_SECONDS = 1.0  # after it is first seen idle, so that what an idle loop does once is counted

# Runs in the worker's own process before the worker (as tests/test_worker_imports.py's probe).
DUMP = """
import json, os, runpy, signal, sys, threading, time
import redis
out, url, workers_key, settle = sys.argv[1:5]
sys.argv = ["wq-redis", *sys.argv[6:]]
def watch():
    client = redis.Redis.from_url(url, decode_responses=True)
    while not (client.zcard(workers_key) and any("b" in c["flags"] for c in client.client_list())):
        time.sleep(0.05)
    time.sleep(float(settle))
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=watch, daemon=True).start()
runpy.run_module("wq_redis", run_name="__main__", alter_sys=True)
"""


def worker_args(url: str, args: tuple[str, ...]) -> list[str]:
    return ["worker", "--redis-url", url, "--queue", QUEUE, "--log-level", "warning", *args]


def wait_idle(client: redis.Redis, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + IDLE_SECONDS
    key = QueueKeys(QUEUE).workers
    while not (client.zcard(key) and any("b" in c["flags"] for c in client.client_list())):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not become idle (exit status {worker.poll()})")
        time.sleep(0.05)
    time.sleep(SETTLE_SECONDS)


def memory(url: str, args: tuple[str, ...]) -> tuple[float, float, float]:
    """(RSS, USS of the idle worker's main process, RSS of its children), in MiB."""
    client = redis.Redis.from_url(url)
    client.flushall()
    worker = subprocess.Popen([sys.executable, "-m", "wq_redis", *worker_args(url, args)], stdin=subprocess.DEVNULL)
    try:
        wait_idle(client, worker)
        main = psutil.Process(worker.pid)
        children = sum(p.memory_info().rss for p in main.children(recursive=True))
        return main.memory_info().rss / 2**20, main.memory_full_info().uss / 2**20, children / 2**20
    finally:
        worker.terminate()
        worker.wait(30)
        client.close()


def modules(url: str, args: tuple[str, ...]) -> list[str]:
    redis.Redis.from_url(url).flushall()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "modules.json")
        command = [sys.executable, "-c", DUMP, out, url, QueueKeys(QUEUE).workers, str(SETTLE_SECONDS), "--"]
        subprocess.run([*command, *worker_args(url, args)], check=True, timeout=IDLE_SECONDS + 30, cwd=tmp)
        with open(out) as f:
            loaded: list[str] = json.load(f)
            return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    print("code:", os.path.dirname(os.path.dirname(os.path.abspath(wq.__file__))))
    print(f"python {sys.version.split()[0]}, redis-py {redis.__version__}")
    server = RedisServer().start()
    try:
        for args in CONFIGS:
            readings = [memory(server.url, args) for _ in range(options.runs)]
            rss, uss, child = (statistics.median(r[i] for r in readings) for i in range(3))
            names = modules(server.url, args)
            ours = [m for m in names if m.startswith("wq_redis")]
            heavy = sorted({m.split(".")[0] for m in names if m.split(".")[0] in HEAVY})
            print(f"wq-redis worker {' '.join(args)}")
            print(f"  main process: RSS {rss:.1f} MiB, USS {uss:.1f} MiB (median of {options.runs})", end="; ")
            print(f"its children: RSS {child:.1f} MiB")
            print(f"  modules: {len(names)} ({len(ours)} of wq_redis); heavy packages: {', '.join(heavy)}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
