"""Who plays the workers: simulated ones (fleet processes, bench/scale/fleet.py) or, for a
reference row that checks the simulation, real ``wq-redis worker`` processes."""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import time
from typing import Any

import redis

from wq_redis.embedded.server import tie_to_caller

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKERS_PER_FLEET = 2_500  # auto: one fleet process per this many workers
REAL_READY_SECONDS = 60.0
ANSWER_SECONDS = 120.0  # longest wait for a fleet process's answer (its start: FLEET_READY_SECONDS)
FLEET_READY_SECONDS = 600.0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (/proc/PID/stat), NaN once gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


class FleetProcess:
    """One ``python -m bench.scale.fleet`` child: commands in on stdin, JSON lines out."""

    def __init__(self, spec: dict[str, Any], log_path: str) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.scale.fleet", json.dumps(spec)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                preexec_fn=tie_to_caller(),
            )

    def read(self, timeout: float = ANSWER_SECONDS) -> dict[str, Any]:
        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            raise TimeoutError(
                f"a fleet process did not answer within {timeout:.0f} s: too many simulated workers for this "
                "machine's CPUs (each 1,000 take about a third of a core at the real cadence)"
            )
        line = self.proc.stdout.readline()
        if not line:
            with open(self.log_path) as handle:
                tail = handle.read()[-3000:]
            raise RuntimeError(f"a fleet process ended (exit {self.proc.poll()}):\n{tail}")
        return dict(json.loads(line))

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        try:
            self.ask("stop")
        except (RuntimeError, OSError, ValueError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def summed(readings: list[dict[str, Any]]) -> dict[str, Any]:
    """The fleets' counters added up (their latencies joined)."""
    total: dict[str, Any] = {"heartbeat_s": readings[0]["heartbeat_s"], "latencies": []}
    for reading in readings:
        for key, value in reading.items():
            if key == "latencies":
                total["latencies"] += value
            elif key not in ("heartbeat_s", "time"):
                total[key] = total.get(key, 0) + value
    return total


class Simulated:
    """``n`` simulated workers in a few fleet processes."""

    label = "sim"

    def __init__(self, n: int, urls: list[str], queue: str, capacity: dict[str, int], processes: int, logs: str):
        # one interpreter's lock carries a few thousand threads (more start ever slower)
        processes = processes or max(1, math.ceil(n / WORKERS_PER_FLEET))
        share = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
        self.fleets: list[FleetProcess] = []
        first = 0
        for index, count in enumerate(share):
            spec = {"urls": urls, "queue": queue, "first": first, "count": count, "capacity": capacity}
            self.fleets.append(FleetProcess(spec, os.path.join(logs, f"fleet-{n}-{index}.log")))
            first += count

    def wait_ready(self) -> str:
        return f"{len(self.fleets)} fleet process(es): {[f.read(FLEET_READY_SECONDS) for f in self.fleets]}"

    def stats(self) -> dict[str, Any] | None:
        return summed([fleet.ask("stats") for fleet in self.fleets])

    def measure(self) -> None:
        for fleet in self.fleets:
            fleet.ask("measure")

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(fleet.proc.pid) for fleet in self.fleets)

    def stop(self) -> None:
        for fleet in self.fleets:
            fleet.stop()


class Real:
    """``n`` real ``wq-redis worker --cores 1`` processes (no counters: Redis' readings only)."""

    label = "real"

    def __init__(self, n: int, url: str, queue: str, logs: str, client: redis.Redis) -> None:
        self.n = n
        self.client = client
        self.workers_key = f"wq:{{{queue}}}:workers"
        self.procs: list[subprocess.Popen[bytes]] = []
        argv = [sys.executable, "-m", "wq_redis", "worker", "--redis-url", url, "--queue", queue, "--cores", "1"]
        for index in range(n):
            with open(os.path.join(logs, f"real-{n}-{index}.log"), "ab") as log_file:
                self.procs.append(
                    subprocess.Popen(
                        argv + ["--name", f"real{index}", "--log-level", "warning"],
                        cwd=ROOT,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        preexec_fn=tie_to_caller(),
                    )
                )

    def wait_ready(self) -> str:
        deadline = time.monotonic() + REAL_READY_SECONDS
        while int(self.client.zcard(self.workers_key)) < self.n:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"real workers did not all register within {REAL_READY_SECONDS:.0f} s")
            time.sleep(0.1)
        return f"{self.n} worker processes"

    def stats(self) -> dict[str, Any] | None:
        return None

    def measure(self) -> None:
        pass

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(p.pid) for p in self.procs)  # main processes only

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
