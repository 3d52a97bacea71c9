"""What every system shares: the configuration, worker processes, the measurements, and
the Redis-side readings (memory, command statistics).

A system (``bench/systems/*.py``) subclasses ``System`` and implements the same handful
of operations with its own API; ``measure`` runs them in the same order, with the same
task counts and worker count, for every system.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024
RESULT_TIMEOUT = 60.0  # longest wait for any single result before the system counts as broken


@dataclass
class Config:
    tasks: int = 5000  # no-op tasks per round (per-call, batch, map, command tasks)
    workers: int = 2  # worker processes, one task at a time each
    latency_samples: int = 500  # sequential submit-then-wait round trips
    mib_tasks: int = 100  # 1 MiB argument + 1 MiB result tasks per round
    queued: int = 20_000  # no-op tasks queued (no workers) for the memory reading
    min_seconds: float = 2.0  # a throughput reading repeats rounds until this much time passed
    quick: bool = False

    @classmethod
    def quick_mode(cls, workers: int = 2) -> Config:
        return cls(
            tasks=200, workers=workers, latency_samples=30, mib_tasks=5, queued=1000, min_seconds=0.0, quick=True
        )


class Processes:
    """Worker processes started by a system; every one is stopped by ``stop``.

    Each child dies with the benchmark (PR_SET_PDEATHSIG) even if the benchmark itself is
    killed, and writes its output to a log file, shown when a system fails.
    """

    def __init__(self, name: str, log_dir: str) -> None:
        self.name = name
        self.log_dir = log_dir
        self.running: list[subprocess.Popen[bytes]] = []
        self.logs: list[str] = []

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        from wq_redis.embedded.server import tie_to_caller

        log_path = os.path.join(self.log_dir, f"{self.name}-worker{len(self.logs)}.log")
        self.logs.append(log_path)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=worker_env(env),
                cwd=ROOT,
                preexec_fn=tie_to_caller(),
            )  # type: ignore[arg-type]
        self.running.append(process)
        return process

    def check_alive(self) -> None:
        dead = [p for p in self.running if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{len(dead)} {self.name} worker(s) exited (rc {dead[0].returncode}): {self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the systems' own graceful stop), then SIGKILL what is left."""
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()

    def log_tail(self, lines: int = 8) -> str:
        out = []
        for path in self.logs[-4:]:
            try:
                with open(path, "rb") as handle:
                    tail = handle.read().decode(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if tail:
                out.append(f"[{os.path.basename(path)}] " + " | ".join(tail))
        return "\n".join(out)


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The benchmark's environment with this checkout first on the import path, so the
    workers import this tree's ``wq_redis`` and ``bench`` whichever venv runs them."""
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


class System:
    """One queue system under test.  Subclasses implement the operations below with the
    system's own client API; the harness times them."""

    name = "?"
    batch_api = "the per-call loop"  # what ``batch`` uses, for the report

    def __init__(self, url: str, config: Config, log_dir: str) -> None:
        self.url = url
        self.config = config
        self.procs = Processes(self.name, log_dir)

    # lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Create the client objects (called again after every FLUSHALL)."""

    def close(self) -> None:
        """Drop the client objects."""

    def start_workers(self) -> None:
        raise NotImplementedError

    def stop_workers(self) -> None:
        self.procs.stop()

    def phase(self, name: str) -> None:
        """Called before each measurement (the hand-written queue switches worker mode)."""

    @staticmethod
    def versions() -> dict[str, str]:
        return {}

    # operations -----------------------------------------------------------------------
    def whoami(self, count: int, delay: float) -> list[int]:
        """Run ``count`` ``tasks.whoami(delay)`` tasks; their worker pids."""
        raise NotImplementedError

    def per_call(self, n: int) -> None:
        """Submit ``n`` no-op tasks, one submit call each, then wait for all their results."""
        raise NotImplementedError

    def batch(self, n: int) -> None:
        """The same with the system's batch API (or the same loop where it has none)."""
        raise NotImplementedError

    def roundtrip(self) -> None:
        """Submit one no-op task and wait for its result."""
        raise NotImplementedError

    def big(self, n: int, payload: bytes) -> None:
        """``n`` tasks ``echo(payload)``, one submit call each; check every result's size."""
        raise NotImplementedError

    def enqueue_only(self, n: int) -> None:
        """Queue ``n`` no-op tasks (no workers are running); the fastest way the system has."""
        raise NotImplementedError

    def extra_rates(self) -> dict[str, Callable[[int], None]]:
        """More throughput readings: name -> operation(n) (wq: map, command tasks)."""
        return {}

    # shared -------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until every worker has run a task: no reading starts with a worker still booting."""
        workers = self.config.workers
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < workers:
            self.procs.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(seen)} of {workers} {self.name} workers answered: {self.procs.log_tail()}"
                )
            seen.update(self.whoami(4 * workers, 0.05))


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def commandstats(client: redis.Redis) -> dict[str, dict[str, float]]:
    """``INFO commandstats``: command -> {calls, usec, usec_per_call, ...}."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): dict(values) for name, values in stats.items()}


PUBSUB_COMMANDS = ("publish", "spublish", "subscribe", "ssubscribe", "psubscribe")


def rate(operation: Callable[[int], None], n: int, min_seconds: float) -> float:
    """Tasks per second: rounds of ``n`` until at least ``min_seconds`` have passed."""
    done = 0
    started = time.perf_counter()
    while True:
        operation(n)
        done += n
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-q * len(sorted_values) // 1)))  # ceil(q * n), at least 1
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency(system: System, samples: int, warmup: int = 20) -> tuple[float, float]:
    """p50 and p99 in ms of ``samples`` sequential submit-then-wait round trips."""
    for _ in range(warmup):
        system.roundtrip()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        system.roundtrip()
        times.append((time.perf_counter() - started) * 1000.0)
    times.sort()
    return percentile(times, 0.50), percentile(times, 0.99)


def measure(system: System, client: redis.Redis, log: Callable[[str], None]) -> dict[str, Any]:
    """Every reading of one system, on a flushed Redis, in a fixed order:
    memory per queued task (no workers), then with workers: per-call, batch, latency,
    1 MiB, and the system's extras.  Stops its workers and flushes Redis before returning."""
    config = system.config
    out: dict[str, Any] = {"system": system.name, "batch_api": system.batch_api, "versions": system.versions()}
    client.flushall()
    try:
        # 1. memory: queue tasks with no workers running, read used_memory, flush
        system.open()
        system.phase("memory")
        before = used_memory(client)
        system.enqueue_only(config.queued)
        out["bytes_per_task"] = (used_memory(client) - before) / config.queued
        system.close()
        client.flushall()
        log(f"  {system.name}: {out['bytes_per_task']:.0f} B per queued task")

        # 2. with workers
        client.config_resetstat()
        system.open()
        system.start_workers()
        system.wait_ready()
        timed = [("per_call", system.per_call, config.tasks), ("batch", system.batch, config.tasks)]
        timed += [(name, op, config.tasks) for name, op in system.extra_rates().items()]
        for name, operation, count in timed:
            system.phase(name)
            out[name] = rate(operation, count, config.min_seconds)
            log(f"  {system.name}: {name} {out[name]:,.0f} tasks/s")
        system.phase("latency")
        out["p50_ms"], out["p99_ms"] = latency(system, config.latency_samples)
        log(f"  {system.name}: round trip p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} ms")
        system.phase("mib")
        payload = os.urandom(MIB)
        out["mib"] = rate(lambda n: system.big(n, payload), config.mib_tasks, config.min_seconds)
        log(f"  {system.name}: 1 MiB in+out {out['mib']:,.0f} tasks/s")
        stats = commandstats(client)
        out["pubsub_calls"] = int(sum(stats.get(c, {}).get("calls", 0) for c in PUBSUB_COMMANDS))
        out["commandstats"] = stats
    finally:
        try:
            system.stop_workers()
        finally:
            try:
                system.close()
            finally:
                client.flushall()
    return out


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (steal included) since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """How busy the machine was with work that is not the benchmark's, while it measured.

    Ours: this process and its reaped children (every worker, once stopped, with the
    processes it reaped), plus the Redis server.  Everything else busy on the machine in
    that time (other people's test suites, steal time of a shared VM) takes CPU from the
    systems under test and makes the readings low and noisy: the report shows it.
    """

    def __init__(self, redis_pid: int | None) -> None:
        self.redis_pid = redis_pid

    def _ours(self) -> float:
        times = os.times()
        total = times.user + times.system + times.children_user + times.children_system
        if self.redis_pid:
            try:
                with open(f"/proc/{self.redis_pid}/stat") as handle:
                    stat = handle.read().rpartition(")")[2].split()
                total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return total

    def start(self) -> CpuMeter:
        self.wall, self.busy, self.ours = time.monotonic(), _machine_busy_seconds(), self._ours()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall
        busy = _machine_busy_seconds() - self.busy
        ours = self._ours() - self.ours
        capacity = wall * (os.cpu_count() or 1)
        return {
            "wall_s": round(wall, 2),
            "ours_cpu_pct": round(100 * ours / capacity, 1),
            "other_cpu_pct": round(max(0.0, 100 * (busy - ours) / capacity), 1),
        }


def log_dir() -> str:
    return tempfile.mkdtemp(prefix="wq-bench-logs-")


def config_dict(config: Config) -> dict[str, Any]:
    return asdict(config)


def python_executable() -> str:
    return sys.executable
