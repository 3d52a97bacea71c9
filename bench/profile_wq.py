"""Where wq-redis spends its time, per side: ``python -m bench.profile_wq`` (``make bench-profile``).

For each phase (per-call submit, submit_many batch, map, command tasks, 1 MiB, round trips):

pass A, undisturbed: the rate, CPU per task of each side (client: this process; workers:
  the worker processes with their warm children; Redis: ``INFO cpu``), and Redis' own
  view: ``INFO commandstats`` and the slow log at threshold 0, which times every call, so
  each Lua script gets its own calls and usec/call (commandstats lumps them into ``evalsha``);
pass B: py-spy (``--gil --nonblocking``: where Python holds the GIL; the targets are never
  stopped) on the client and on every worker with its children;
pass C: the same phase under cProfile in the client, for exact call counts.

Prints a summary and leaves the raw material (py-spy raw stacks, .prof files, slow-log
aggregates as JSON) in ``bench/results/profile-*/``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import hashlib
import io
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil
import redis

from bench import harness
from bench.systems.wq import WQ

SAMPLE_RATE = 100  # py-spy samples per second
HARNESS_COMMANDS = {"info", "slowlog", "config", "ping", "client", "hello"}  # ours, not wq-redis''
PHASES = ("per_call", "batch", "map", "cmd", "mib", "latency")
GENERIC_FRAMES = re.compile(r"^(<module>|Thread\.run|Thread\._bootstrap(_inner)?|_run_module_as_main|_run_code|main) ")


def script_names() -> dict[str, str]:
    """SHA1 -> name of every Lua script of wq_redis (what EVALSHA's first argument is)."""
    from wq_redis.protocol.store import QueueStore, script_source

    return {hashlib.sha1(script_source(name).encode()).hexdigest(): name for name in QueueStore.SCRIPTS}


# -- py-spy -----------------------------------------------------------------------------
def py_spy_binary() -> str | None:
    candidate = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return candidate if os.access(candidate, os.X_OK) else shutil.which("py-spy")


class Sampler:
    """py-spy record on some processes until ``stop``."""

    def __init__(self, binary: str | None, out_dir: str) -> None:
        self.binary = binary
        self.out_dir = out_dir
        self.running: list[tuple[subprocess.Popen[bytes], str, str]] = []

    def start(self, label: str, pid: int, subprocesses: bool) -> None:
        if not self.binary:
            return
        path = os.path.join(self.out_dir, f"{label}.raw")
        # --gil: only the thread holding the GIL is sampled, so the profile shows where
        # Python burns CPU, not where threads sit waiting (py-spy's idle test misses some waits)
        argv = [
            self.binary,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(SAMPLE_RATE),
            "--nonblocking",
            "--gil",
            "--format",
            "raw",
            "--threads",
            "--output",
            path,
        ]
        if subprocesses:
            argv.append("--subprocesses")
        log = open(os.path.join(self.out_dir, f"{label}.py-spy.log"), "wb")
        self.running.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), label, path))
        log.close()

    def stop(self) -> dict[str, str]:
        for process, _, _ in self.running:
            process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        done = {}
        for process, label, path in self.running:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if os.path.exists(path):
                done[label] = path
        self.running.clear()
        return done


def _frame_key(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``func (path/file.py)``."""
    return re.sub(r":\d+\)$", ")", frame)


def read_raw(paths: list[str]) -> list[tuple[list[str], int]]:
    stacks = []
    for path in paths:
        with open(path, errors="replace") as handle:
            text = handle.read()
        # a process frame's command line may hold newlines: a record ends with " COUNT"
        record = ""
        for line in text.splitlines():
            record = f"{record} {line}" if record else line
            head, _, count = record.rpartition(" ")
            if head and count.isdigit():
                stacks.append((head.split(";"), int(count)))
                record = ""
    return stacks


def summarize_stacks(stacks: list[tuple[list[str], int]], top: int) -> dict[str, Any]:
    """Samples per role/thread, and the top functions by self and by inclusive samples."""
    total = sum(n for _, n in stacks)
    roles: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        processes = [f for f in frames if f.startswith("process ")]
        threads = [f for f in frames if f.startswith("thread (")]
        code = [f for f in frames if not f.startswith(("process ", "thread ("))]
        role = "child" if len(processes) > 1 else "main"
        if processes and "wq_redis.worker.child" in processes[-1]:
            role = "warm child"
        elif len(processes) > 1:
            role = "child: " + processes[-1].partition(":")[2][:40]
        thread = re.sub(r"task-\d+", "task-*", threads[-1].partition(": ")[2]) if threads else "?"
        roles[f"{role} / {thread}"] += n
        if code:
            own[_frame_key(code[-1])] += n
        for key in {_frame_key(f) for f in code if not GENERIC_FRAMES.match(f)}:
            inclusive[key] += n
    return {
        "samples": total,
        "cpu_seconds": total / SAMPLE_RATE,
        "roles": roles.most_common(),
        "self": own.most_common(top),
        "inclusive": inclusive.most_common(top),
    }


# -- Redis --------------------------------------------------------------------------------
def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def slowlog_by_script(client: redis.Redis, names: dict[str, str]) -> list[dict[str, Any]]:
    """Every call in the slow log (threshold 0), grouped by script (EVALSHA) or command."""
    entries = client.execute_command("SLOWLOG", "GET", -1)
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for entry in entries:
        duration, args = int(entry[2]), entry[3]
        command = args[0].decode(errors="replace").lower() if args else "?"
        if command in ("evalsha", "evalsha_ro") and len(args) > 1:
            sha = args[1].decode(errors="replace")
            name = f"script {names.get(sha, sha[:12])}"
        elif command in ("fcall", "fcall_ro") and len(args) > 1:
            name = f"function {args[1].decode(errors='replace')}"
        elif command in HARNESS_COMMANDS:
            continue
        else:
            name = command
        groups[name].append(duration)
    rows = [
        {"name": name, "calls": len(v), "usec": sum(v), "usec_per_call": sum(v) / len(v), "max_usec": max(v)}
        for name, v in groups.items()
    ]
    return sorted(rows, key=lambda r: -r["usec"])


def top_commandstats(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], top: int
) -> list[dict[str, Any]]:
    rows = []
    for name, stats in after.items():
        calls = stats.get("calls", 0) - before.get(name, {}).get("calls", 0)
        usec = stats.get("usec", 0) - before.get(name, {}).get("usec", 0)
        if calls > 0 and name not in HARNESS_COMMANDS:
            rows.append({"name": name, "calls": int(calls), "usec": int(usec), "usec_per_call": usec / calls})
    return sorted(rows, key=lambda r: -r["usec"])[:top]


# -- CPU per side -------------------------------------------------------------------------
def process_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes, their live descendants and their reaped children."""
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            family = [process] + process.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for member in family:
            try:
                t = member.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
    return total


def client_cpu() -> float:
    t = os.times()
    return t.user + t.system


def latency_breakdown(system: WQ, n: int) -> dict[str, dict[str, float]]:
    """Where one round trip's time goes, from the task's own timestamps (one clock: the
    manager's ``time.time()`` and Redis' TIME on the same machine): submit -> claimed by a
    worker (``execute_cmd_start``) -> result recorded (``finish_time``) -> back from wait."""
    from bench import tasks
    from wq_redis import PythonTask

    segments: dict[str, list[float]] = {
        "submit -> claimed": [],
        "claimed -> result stored": [],
        "result stored -> wait() returned": [],
        "total": [],
    }
    for _ in range(n):
        started = time.time()
        system.q.submit(PythonTask(tasks.noop))
        task = system.q.wait(10)
        back = time.time()
        if task is None or task.execute_cmd_start is None or task.finish_time is None:
            continue
        claimed, stored = task.execute_cmd_start / 1e6, task.finish_time / 1e6
        segments["submit -> claimed"].append(claimed - started)
        segments["claimed -> result stored"].append(stored - claimed)
        segments["result stored -> wait() returned"].append(back - stored)
        segments["total"].append(back - started)
    out = {}
    for name, values in segments.items():
        values.sort()
        out[name] = {
            "p50_ms": 1000 * harness.percentile(values, 0.5),
            "p99_ms": 1000 * harness.percentile(values, 0.99),
        }
    return out


# -- the run --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_wq", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per phase")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phases", default=",".join(PHASES), help=f"from {','.join(PHASES)}")
    parser.add_argument("--top", type=int, default=12, help="functions listed per table")
    parser.add_argument("--out", help="directory for the raw material (default bench/results/profile-TIME)")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    out_dir = args.out or os.path.join(harness.ROOT, "bench", "results", time.strftime("profile-%Y%m%d-%H%M%S"))
    os.makedirs(out_dir, exist_ok=True)
    spy = py_spy_binary()
    if spy is None:
        print(
            "py-spy not found (make bench-profile installs it into bench/.venv): no sampling profiles", file=sys.stderr
        )

    from wq_redis.embedded.server import RedisServer

    server = RedisServer(extra_args=["--appendonly", "no", "--slowlog-max-len", "1000000"]).start()
    client = redis.Redis.from_url(server.url)
    config = harness.Config(tasks=args.tasks, workers=args.workers, min_seconds=0.0)
    logs = harness.log_dir()
    system = WQ(server.url, config, logs)
    names = script_names()
    payload = os.urandom(harness.MIB)
    mib_tasks = max(10, args.tasks // 50)
    latency_samples = min(args.tasks, 1000)

    def roundtrips(n: int) -> None:
        for _ in range(n):
            system.roundtrip()

    operations: dict[str, tuple[Callable[[int], None], int]] = {
        "per_call": (system.per_call, args.tasks),
        "batch": (system.batch, args.tasks),
        "map": (system.map, args.tasks),
        "cmd": (system.commands, args.tasks),
        "mib": (lambda n: system.big(n, payload), mib_tasks),
        "latency": (roundtrips, latency_samples),
    }
    summary: dict[str, Any] = {"out_dir": out_dir, "phases": {}}
    report = io.StringIO()

    def say(text: str = "") -> None:
        print(text)
        report.write(text + "\n")

    try:
        system.open()
        system.start_workers()
        system.wait_ready()
        worker_pids = [p.pid for p in system.procs.running]
        system.per_call(200)  # warm: functions cached, warm children started
        say(
            f"wq-redis profile: {args.workers} workers (--cores 1), {args.tasks} tasks per phase; "
            f"raw files in {out_dir}"
        )
        for phase in phases:
            operation, n = operations[phase]
            # pass A, undisturbed: rate, CPU per side, Redis' per-script times
            client.config_set("slowlog-log-slower-than", 0)
            client.slowlog_reset()
            stats_before = harness.commandstats(client)
            cpu_before = (client_cpu(), process_cpu(worker_pids), redis_cpu(client))
            started = time.perf_counter()
            operation(n)
            wall = time.perf_counter() - started
            cpu_after = (client_cpu(), process_cpu(worker_pids), redis_cpu(client))
            client.config_set("slowlog-log-slower-than", 10000)
            stats_after = harness.commandstats(client)
            scripts = slowlog_by_script(client, names)

            # pass B: py-spy on the client and on every worker with its children
            sampler = Sampler(spy, out_dir)
            sampler.start(f"{phase}-client", os.getpid(), subprocesses=False)
            for index, pid in enumerate(worker_pids):
                sampler.start(f"{phase}-worker{index}", pid, subprocesses=True)
            time.sleep(1.0)  # let py-spy attach
            started_s = time.perf_counter()
            operation(n)
            wall_s = time.perf_counter() - started_s
            raw = sampler.stop()

            # pass C: cProfile in the client
            profiler = cProfile.Profile()
            profiler.enable()
            started_b = time.perf_counter()
            operation(n)
            wall_b = time.perf_counter() - started_b
            profiler.disable()
            prof_path = os.path.join(out_dir, f"{phase}-client.prof")
            profiler.dump_stats(prof_path)

            cpu_us = [(a - b) / n * 1e6 for a, b in zip(cpu_after, cpu_before)]
            client_stacks = summarize_stacks(read_raw([p for k, p in raw.items() if k.endswith("-client")]), args.top)
            worker_stacks = summarize_stacks(read_raw([p for k, p in raw.items() if "-worker" in k]), args.top)
            entry = {
                "tasks": n,
                "rate": n / wall,
                "rate_under_py_spy": n / wall_s,
                "rate_under_cprofile": n / wall_b,
                "cpu_us_per_task": {"client": cpu_us[0], "workers": cpu_us[1], "redis": cpu_us[2]},
                "redis_busy_pct": 100 * (cpu_after[2] - cpu_before[2]) / wall,
                "redis_scripts": scripts,
                "redis_commandstats": top_commandstats(stats_before, stats_after, args.top),
                "client_samples": client_stacks,
                "worker_samples": worker_stacks,
            }
            summary["phases"][phase] = entry
            unit = "round trips" if phase == "latency" else "tasks"
            say()
            say(
                f"=== {phase}: {n} {unit}, {entry['rate']:,.0f}/s undisturbed "
                f"({entry['rate_under_py_spy']:,.0f}/s under py-spy, "
                f"{entry['rate_under_cprofile']:,.0f}/s under cProfile) ==="
            )
            say(
                f"CPU per task: client {cpu_us[0]:,.0f} us, workers {cpu_us[1]:,.0f} us (all {args.workers}, with warm "
                f"children), Redis {cpu_us[2]:,.0f} us; Redis busy {entry['redis_busy_pct']:.0f}% of the wall time"
            )
            say("Redis, per script/command (slow log at threshold 0; usec is execution time inside Redis):")
            for row in scripts[:8]:
                say(
                    f"  {row['name']:<28} calls {row['calls']:>7,}  {row['usec_per_call']:>8.1f} us/call  "
                    f"{row['usec'] / n:>7.1f} us/task  max {row['max_usec']:,} us"
                )
            say("Redis commandstats (commands inside scripts counted too):")
            for row in entry["redis_commandstats"][:8]:
                say(
                    f"  {row['name']:<28} calls {row['calls']:>7,}  {row['usec_per_call']:>8.2f} us/call  "
                    f"{row['usec'] / n:>7.1f} us/task"
                )
            for side, stacks in (("client", client_stacks), ("workers", worker_stacks)):
                if not stacks["samples"]:
                    continue
                say(
                    f"{side} (py-spy --gil: {stacks['cpu_seconds']:.1f} s holding the GIL) by process/thread: "
                    + ", ".join(f"{k} {100 * v / stacks['samples']:.0f}%" for k, v in stacks["roles"][:6])
                )
                say(
                    "  self:      "
                    + "; ".join(f"{100 * v / stacks['samples']:.0f}% {k}" for k, v in stacks["self"][: args.top])
                )
                say(
                    "  inclusive: "
                    + "; ".join(f"{100 * v / stacks['samples']:.0f}% {k}" for k, v in stacks["inclusive"][: args.top])
                )
            if phase == "latency":
                entry["breakdown"] = latency_breakdown(system, n)
                say(
                    "round trip by segment (task timestamps): "
                    + "; ".join(
                        f"{k} p50 {v['p50_ms']:.2f} ms / p99 {v['p99_ms']:.2f} ms"
                        for k, v in entry["breakdown"].items()
                    )
                )
            stream = io.StringIO()
            pstats.Stats(prof_path, stream=stream).sort_stats("tottime").print_stats(args.top)
            say(f"client cProfile, top {args.top} by own time:")
            say("\n".join("  " + line for line in _pstats_rows(stream.getvalue())))
    finally:
        system.stop_workers()
        system.close()
        client.close()
        server.stop()
        shutil.rmtree(logs, ignore_errors=True)
    with open(os.path.join(out_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2, default=str)
    with open(os.path.join(out_dir, "summary.txt"), "w") as handle:
        handle.write(report.getvalue())
    return 0


def _pstats_rows(text: str) -> list[str]:
    """The table part of a pstats printout (header line and rows)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("ncalls"):
            return [kept for kept in lines[index:] if kept.strip()]
    return lines


if __name__ == "__main__":
    sys.exit(main())
