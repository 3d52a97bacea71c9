"""Run the benchmark: ``python -m bench.run [--quick] [--systems wq,huey,...]``.

One Redis server for every system (started here on a free loopback port, unless
``--redis-url`` names one, which is then FLUSHALLed), FLUSHALL between systems, the
same worker count and task counts for all; prints one table, wq/peer ratios and the
goals of issue 4.  ``make bench`` runs it from the bench virtualenv, where the peers are
installed; ``--systems wq,handwritten`` needs only the project's own dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import time
import traceback
from typing import Any

import redis

from bench import harness, report
from bench.systems import MODULES, ORDER


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = harness.Config()
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--systems", default=",".join(ORDER), help=f"comma-separated, from {','.join(ORDER)}")
    parser.add_argument("--tasks", type=int, help=f"no-op tasks per round (default {defaults.tasks}; quick 200)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="worker processes per system")
    parser.add_argument("--latency-samples", type=int, help=f"round trips timed (default {defaults.latency_samples})")
    parser.add_argument("--mib-tasks", type=int, help=f"1 MiB tasks per round (default {defaults.mib_tasks})")
    parser.add_argument("--queued", type=int, help=f"tasks queued for the memory reading (default {defaults.queued})")
    parser.add_argument(
        "--min-seconds",
        type=float,
        help=f"repeat throughput rounds until this long (default {defaults.min_seconds}; quick 0)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks that the benchmark runs (CI)")
    parser.add_argument(
        "--aof",
        action="store_true",
        help="Redis with wq-redis' own AOF setting (appendfsync everysec); default: appendonly no",
    )
    parser.add_argument("--redis-url", help="use this Redis instead of starting one (it is FLUSHALLed!)")
    parser.add_argument("--json", dest="json_out", metavar="OUT", help="also write every reading to this JSON file")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every system this many times (interleaved) and keep the best readings",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal fails (not only on errors)")
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace) -> harness.Config:
    config = harness.Config.quick_mode(args.workers) if args.quick else harness.Config(workers=args.workers)
    for name in ("tasks", "latency_samples", "mib_tasks", "queued", "min_seconds"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    return config


def run_one(system: harness.System, client: redis.Redis, server: Any) -> dict[str, Any]:
    """One system's readings, with how busy the machine was with other work meanwhile."""
    meter = harness.CpuMeter(server.process.pid if server is not None and server.process else None).start()
    try:
        result = harness.measure(system, client, log)
    except Exception as exc:  # one broken system must not hide the others' readings
        result = {
            "system": system.name,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "worker_log": system.procs.log_tail(),
        }
        log(f"  {system.name}: FAILED: {result['error']}\n{result['traceback']}{result['worker_log']}")
    result["cpu"] = meter.stop()
    log(
        f"  {system.name}: {result['cpu']['wall_s']:.0f} s; "
        f"CPU used by the benchmark {result['cpu']['ours_cpu_pct']}%, "
        f"by other work on this machine {result['cpu']['other_cpu_pct']}%"
    )
    return result


HIGHER_BETTER = ("per_call", "batch", "map", "mib", "cmd")
LOWER_BETTER = ("p50_ms", "p99_ms", "bytes_per_task")


def combine(readings: list[dict[str, Any]]) -> dict[str, Any]:
    """Best of several runs: the highest rates, the lowest latencies and memory (noise on a
    shared machine only ever makes a reading worse); the busiest 'other CPU' seen."""
    good = [r for r in readings if "error" not in r]
    if not good:
        return readings[-1]
    best = dict(good[-1])
    for key in HIGHER_BETTER + LOWER_BETTER:
        values = [r[key] for r in good if r.get(key) is not None]
        if values:
            best[key] = max(values) if key in HIGHER_BETTER else min(values)
    best["pubsub_calls"] = max(r.get("pubsub_calls", 0) for r in good)
    best["other_cpu_pct"] = max(r["cpu"]["other_cpu_pct"] for r in readings)
    best["runs"] = len(readings)
    if len(readings) > 1:
        best["all_runs"] = [{k: r.get(k) for k in HIGHER_BETTER + LOWER_BETTER + ("cpu", "error")} for r in readings]
    return best


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = make_config(args)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in MODULES]
    if unknown:
        log(f"unknown systems {unknown}; choose from {ORDER}")
        return 2
    systems = [s for s in ORDER if s in systems]

    server = None
    if args.redis_url:
        url = args.redis_url
    else:
        from wq_redis.embedded.server import RedisServer

        server = RedisServer(extra_args=[] if args.aof else ["--appendonly", "no"]).start()
        url = server.url
    client = redis.Redis.from_url(url)
    logs = harness.log_dir()
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        info = client.info("server")
        meta = {
            "redis": f"{'valkey ' + info['valkey_version'] if 'valkey_version' in info else 'redis'} "
            f"(redis_version {info['redis_version']}), {'AOF everysec' if args.aof else 'appendonly no'}"
            f"{'' if server else ', external'}",
            "python": f"{platform.python_version()} ({sys.executable})",
            "cpus": os.cpu_count(),
            "config": harness.config_dict(config),
            "worker_logs": logs,
        }
        log(
            f"bench: {', '.join(systems)}; {config.workers} workers; {meta['redis']}; {meta['cpus']} CPUs; "
            f"tasks {config.tasks}, latency samples {config.latency_samples}, 1 MiB tasks {config.mib_tasks}, "
            f"queued {config.queued}, min {config.min_seconds} s per reading; worker logs in {logs}"
        )
        modules = {}
        for name in systems:
            try:
                modules[name] = importlib.import_module(MODULES[name])
            except ImportError as exc:
                results[name] = {"system": name, "error": f"not installed ({exc}); `make bench` installs the peers"}
                log(f"[{name}] skipped: {results[name]['error']}")
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in modules}
        for repeat in range(args.repeat):
            for name, module in modules.items():
                log(f"[{name}]" + (f" run {repeat + 1} of {args.repeat}" if args.repeat > 1 else ""))
                runs[name].append(run_one(module.SYSTEM(url, config, logs), client, server))
        results.update({name: combine(readings) for name, readings in runs.items()})
    finally:
        client.close()
        if server is not None:
            server.stop()

    goal_rows = report.goals(results)
    print()
    print(
        f"wq-redis benchmark: {config.workers} workers x 1 task at a time; {meta['redis']}; {meta['cpus']} CPUs; "
        f"python {platform.python_version()}"
        f"{'; QUICK MODE (counts too small to mean anything)' if config.quick else ''}"
    )
    versions = {k: v for r in results.values() for k, v in (r.get("versions") or {}).items()}
    if versions:
        print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(
        f"per round: {config.tasks} no-op tasks, {config.mib_tasks} x 1 MiB; rounds repeat for at least "
        f"{config.min_seconds} s; {config.latency_samples} round trips; {config.queued} tasks queued for memory"
    )
    print()
    print(report.table(results))
    print()
    print(report.goals_table(goal_rows))
    print(f"\n{time.monotonic() - started:.0f} s in all")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"meta": meta, "results": results, "goals": goal_rows}, handle, indent=2, default=str)
    busy = {n: r["other_cpu_pct"] for n, r in results.items() if r.get("other_cpu_pct", 0) > 10}
    if busy:
        print(
            "WARNING: other work kept this machine busy while it measured "
            f"({', '.join(f'{n} {v:.0f}%' for n, v in busy.items())} of its CPU): the readings are low and noisy; "
            "run again on an idle machine, or with --repeat 3"
        )
    failed = [n for n, r in results.items() if "error" in r and not r["error"].startswith("not installed")]
    if not failed:
        shutil.rmtree(logs, ignore_errors=True)
    if failed:
        print(f"errors: {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.strict and any(row[3] == "FAIL" for row in goal_rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
