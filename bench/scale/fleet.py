"""Simulated workers: one process holds many, each speaking the real worker's protocol.

Run by ``bench.scale.run`` as ``python -m bench.scale.fleet SPEC_JSON``; it registers its
workers, starts them, prints one JSON line ``{"ready": ...}``, then answers commands read
from stdin, one per line: ``stats`` (counters so far and the claim latencies recorded),
``measure`` (claim latencies are recorded from now on, earlier ones dropped) and ``stop``.

What a simulated worker does is what a one-core ``wq-redis worker`` does (worker/loop.py,
worker/leases.py, worker/child/lane.py), through the same ``QueueStore`` calls, so the same
Lua scripts, keys and arguments, at the same cadence (the worker's own constants and
defaults are imported, not copied):

* registers as ``Leases._register`` does (its record, then a renewal);
* claims as a one-slot worker's main loop and fast lane do (``Worker._loop``,
  ``ChildLane._serve``): a plain ``QueueStore.claim`` on the worker process's store; when
  it brings nothing, the lane's claims on a connection of its own (named as the lane's),
  each with ``wake_on`` = the eligible queues of the last claim and ``block_seconds`` =
  ``idle_wait_seconds`` (a BLPOP on the wake keys, then claim.lua, in one round trip), for
  as long as each brings exactly one task; after a wait whose claim brought nothing, the
  next wait follows without a plain claim between; followers per claim from the worker's
  own ``Pace``;
* "runs" a claimed task at once: its result fields are made by the worker's own
  ``result_fields`` (success, the value ``None`` pickled as a child pickles it) and
  delivered with the next claim, as the lane delivers;
* renews every ``min(lease / HEARTBEATS_PER_LEASE, HEARTBEAT_MAX_SECONDS)`` after the
  previous renewal ended while it holds leases, every ``min(lease *
  IDLE_HEARTBEAT_LEASES, IDLE_HEARTBEAT_MAX_SECONDS)`` while it holds none
  (``QueueStore.renew``: its record, status and the leases it holds)
  and tries the reaper's lock every ``lease * REAP_EVERY_LEASES`` with the renewal (SET NX
  in renew.lua; reap.lua by the one that takes it), on the worker process's store, whose connection pool
  opens a second connection only when the main loop and the heartbeat meet, as the
  worker's does.

What it does not do: run anything (no child processes, no sandboxes, no function bodies
loaded: claim.lua's work is all there, the worker's Python is not), watch its own memory,
or serve metrics.  The renewals of many workers are shared by a few threads (each worker's
on its own connections): when those threads cannot keep up, the renewals come less often
than the real worker's, and ``stats`` says so (renewals done against renewals due).
"""

from __future__ import annotations

import functools
import heapq
import json
import os
import pickle
import resource
import secrets
import socket
import sys
import threading
import time
from typing import Any

import redis

from wq_redis.protocol import lua
from wq_redis.protocol.codes import Result
from wq_redis.protocol.connection import connect
from wq_redis.protocol.fields import (
    WORKER_GPUS,
    WORKER_HOST,
    WORKER_NAME,
    WORKER_PID,
    WORKER_RESOURCES,
    WORKER_STARTED,
    WORKER_STATUS,
    WORKER_TAGS,
    WORKER_VERSION,
)
from wq_redis.protocol.sizes import MAX_TASK_BYTES
from wq_redis.protocol.store import Claimed, QueueStore
from wq_redis.protocol.version import __version__
from wq_redis.worker.child.lane import lane_client_name
from wq_redis.worker.child.quick import Pace
from wq_redis.worker.child.results import Outcome, named_host, result_fields
from wq_redis.worker.leases import (
    HEARTBEAT_MAX_SECONDS,
    HEARTBEATS_PER_LEASE,
    IDLE_HEARTBEAT_LEASES,
    IDLE_HEARTBEAT_MAX_SECONDS,
    REAP_EVERY_LEASES,
    SILENT_LEASES,
)
from wq_redis.worker.loop import BATCH_BYTES, CLAIM_RETRY_SECONDS, WorkerOptions, idle_wait_seconds

HOST = socket.gethostname()
NONE_VALUE = pickle.dumps(None, protocol=pickle.HIGHEST_PROTOCOL)  # a no-op's return value, as a child pickles it
WORKERS_PER_BEAT_THREAD = 250  # simulated workers whose renewals one thread makes
CONNECTIONS_AT_MOST = 3  # per worker: the lane's, and the main process' pool (main loop, heartbeat)
FLEET_NICE = 10  # Redis (and whatever else shares the machine) comes first: its readings are the point
THREAD_STACK = 256 * 1024  # thousands of threads: small stacks (they only make Redis calls)
DEFAULTS = WorkerOptions()
WAIT_SECONDS = idle_wait_seconds(DEFAULTS)  # an idle worker's wait for work
WOKEN_BEFORE = 0.9  # a wait that ended before this share of block_seconds was ended by a wake-up


def heartbeat_interval(lease_seconds: float, idle: bool = False) -> float:
    """The worker's heartbeat period (Leases._heartbeat_loop), holding leases or not."""
    if idle:
        return min(lease_seconds * IDLE_HEARTBEAT_LEASES, IDLE_HEARTBEAT_MAX_SECONDS)
    return min(lease_seconds / HEARTBEATS_PER_LEASE, HEARTBEAT_MAX_SECONDS)


class SimWorker:
    """One simulated one-core worker: its connections, its claim loop, its heartbeat."""

    def __init__(self, name: str, url: str, queue: str, capacity: dict[str, int]) -> None:
        self.name = name
        self.session = f"{name}#{secrets.token_hex(4)}"  # lease tokens start with this
        self.capacity = capacity
        self.lease_ms = int(DEFAULTS.lease_seconds * 1000)
        # the worker process's store (main loop, heartbeat: its pool opens what they use at once)
        self.main = QueueStore(connect(url), queue)
        self.lane = QueueStore(connect(url, client_name=lane_client_name(name)), queue, one_thread=True)
        # A worker's stores send SCRIPT LOAD of every script before their first call: left
        # out here (15 scripts x 2 stores x 10,000 workers is gigabytes of the same scripts);
        # the manager loaded them, and a NOSCRIPT answer would still load them again.
        self.main._scripts_loaded = self.lane._scripts_loaded = True
        self.held: dict[int, str] = {}  # leases of results not yet delivered (the heartbeat renews them)
        self.beats = 0
        self.last_reap = time.monotonic()
        self.last_work = 0.0  # monotonic time of the last task "run" (its beats are busy for a period after)
        self.claims = self.blocking = self.fruitful = 0
        self.empty_measured = 0  # woken, and nothing to take (measured claims only)
        self.tasks = self.delivered = self.errors = 0
        # seconds: claims sent after ``measure_from`` without a wait (the main loop's, which
        # deliver the last batch's results) that brought tasks
        self.latencies: list[float] = []
        self.measure_from = float("inf")

    def status(self) -> str:
        """The record's status, as ``Leases._status`` writes it."""
        running = len(self.held)
        in_use = {"cores": min(running, 1), "memory": 0, "disk": 0, "gpus": 0}
        return json.dumps(
            {"running": running, "in_use": in_use, "done": self.delivered, "draining": False, "blocked": False}
        )

    def register(self) -> None:
        record = {
            WORKER_NAME: self.name,
            WORKER_HOST: HOST,
            WORKER_PID: os.getpid(),
            WORKER_VERSION: __version__,
            WORKER_RESOURCES: json.dumps(self.capacity),
            WORKER_TAGS: "",
            WORKER_GPUS: "[]",
            WORKER_STARTED: time.time(),
            WORKER_STATUS: self.status(),
        }
        self.main.register_worker(self.name, record)
        self.main.renew(self.name, self.status(), {}, self.lease_ms)

    def beat(self) -> None:
        """One heartbeat: renewal, with the reaper's lock tried every ``lease *
        REAP_EVERY_LEASES`` (and the reaper run by the worker that took it)."""
        self.beats += 1
        reap_due = time.monotonic() - self.last_reap >= DEFAULTS.lease_seconds * REAP_EVERY_LEASES
        lock_ms = int(self.lease_ms * REAP_EVERY_LEASES) if reap_due else 0
        renewal = self.main.renew(self.name, self.status(), dict(self.held), self.lease_ms, reaper_lock_ms=lock_ms)
        if reap_due:
            self.last_reap = time.monotonic()
        if not renewal.registered:
            self.register()
        if renewal.reaper:
            self.main.reap(lock_ms=0, worker_timeout_ms=self.lease_ms * SILENT_LEASES, force=True)

    def serve(self, go: threading.Event, stop: threading.Event) -> None:
        """The worker's claim loop (Worker._loop with its fast lane, one slot): a plain claim
        on the main store, which delivers what waits; when it brings nothing, the lane's
        claims, each waiting on the wake keys first, for as long as each brings exactly one
        task (the lane runs it and delivers it with its next claim)."""
        results: list[tuple[int, str, dict[str, Any]]] = []
        eligible: list[str] = []
        pace = Pace()
        looked = False  # the last wait's claim brought nothing: no plain claim before the next
        go.wait()
        while not stop.is_set():
            if not looked:
                claimed, eligible, results = self._claim(self.main, None, eligible, results, pace)
                if claimed:
                    continue
            while not stop.is_set():
                claimed, eligible, results = self._claim(self.lane, eligible, eligible, results, pace)
                if len(claimed) != 1:  # nothing (the wait ran out), or a batch: back to the main loop
                    looked = not claimed
                    break
        if results:  # the last results, delivered alone
            self.main.complete(results)

    def _claim(
        self,
        store: QueueStore,
        wake_on: list[str] | None,
        eligible: list[str],
        results: list[tuple[int, str, dict[str, Any]]],
        pace: Pace,
    ) -> tuple[list[Claimed], list[str], list[tuple[int, str, dict[str, Any]]]]:
        """One claim (delivering ``results``), its tasks "run": what was claimed, the
        eligible queues now, and the results to deliver next."""
        sent = time.monotonic()
        try:
            claimed, eligible, accepted = store.claim(
                worker=self.name,
                free=self.capacity,
                tags=[],
                max_tasks=self.capacity["cores"] + self.capacity["gpus"],
                lease_ms=self.lease_ms,
                token_prefix=self.session,
                results=results,
                total=self.capacity,
                reserve_after_ms=int(DEFAULTS.reserve_after * 1000),
                followers=pace.followers(),
                follower_bytes=BATCH_BYTES,
                wake_on=wake_on,
                block_seconds=WAIT_SECONDS,
                max_task_bytes=MAX_TASK_BYTES,
            )
        except redis.RedisError:
            self.errors += 1
            time.sleep(CLAIM_RETRY_SECONDS)
            return [], eligible, results
        elapsed = time.monotonic() - sent
        self.claims += 1
        self.blocking += wake_on is not None
        self.delivered += sum(1 for ok in accepted if ok)
        if sent >= self.measure_from:
            if claimed and wake_on is None:  # a busy worker's round trip: no wait for work in it
                self.latencies.append(elapsed)
            elif wake_on is not None and elapsed < WOKEN_BEFORE * WAIT_SECONDS:
                self.empty_measured += 1  # woken (not timed out), and found nothing to take
        results = self._run(claimed, pace)
        self.held = {task_id: token for task_id, token, _ in results}
        return claimed, eligible, results

    def _run(self, claimed: list[Claimed], pace: Pace) -> list[tuple[int, str, dict[str, Any]]]:
        """ "Run" the tasks claimed: their success, made as the worker makes it."""
        if not claimed:
            return []
        self.fruitful += 1
        self.last_work = time.monotonic()
        self.tasks += len(claimed)
        started = time.perf_counter()
        results = []
        for task in claimed:
            wall = max(time.perf_counter() - started, 1e-6)
            outcome = Outcome(Result.SUCCESS, value=NONE_VALUE)
            fields = result_fields(
                task.task_id, outcome, {}, wall, DEFAULTS.max_result_bytes, None, named_host(task.fields)
            )
            results.append((task.task_id, task.token, fields))
        pace.record(len(claimed), time.perf_counter() - started)
        return results


class Heartbeats(threading.Thread):
    """The heartbeats of some workers, each due ``interval`` after its last one ended."""

    def __init__(self, workers: list[SimWorker], interval: float, stop: threading.Event) -> None:
        super().__init__(name="beats", daemon=True)
        self.workers = workers
        self.interval = interval
        self.busy_interval = heartbeat_interval(DEFAULTS.lease_seconds)
        self.stop = stop
        self.errors = 0

    def run(self) -> None:
        now = time.monotonic()
        # spread over one period, as workers started at different moments are
        due = [(now + self.interval * i / len(self.workers), i) for i in range(len(self.workers))]
        heapq.heapify(due)
        while not self.stop.is_set():
            when, index = due[0]
            wait = when - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                return
            try:
                self.workers[index].beat()
            except redis.RedisError:
                self.errors += 1
            # (the period of a worker holding leases, or of one holding none)
            worker = self.workers[index]
            busy = worker.held or time.monotonic() - worker.last_work <= self.busy_interval
            interval = self.busy_interval if busy else self.interval
            heapq.heapreplace(due, (time.monotonic() + interval, index))


class Fleet:
    """Some simulated workers and the threads that drive them."""

    def __init__(self, spec: dict[str, Any]) -> None:
        urls = spec["urls"]
        capacity = spec["capacity"]
        self.interval = heartbeat_interval(DEFAULTS.lease_seconds, idle=True)  # the idle workers' period
        self.stop = threading.Event()
        self.go = threading.Event()  # every thread started (each start waits for the lock) before any claims
        self.workers = [
            SimWorker(f"sim{index}@{HOST}", urls[index % len(urls)], spec["queue"], capacity)
            for index in range(spec["first"], spec["first"] + spec["count"])
        ]
        for worker in self.workers:
            worker.register()
        self.claimers = [
            threading.Thread(target=w.serve, args=(self.go, self.stop), name="claim", daemon=True) for w in self.workers
        ]
        step = WORKERS_PER_BEAT_THREAD
        self.beaters = [
            Heartbeats(self.workers[i : i + step], self.interval, self.stop) for i in range(0, len(self.workers), step)
        ]
        self.started = 0.0

    def start(self) -> None:
        for thread in self.claimers:
            thread.start()
        self.go.set()
        for thread in self.beaters:
            thread.start()
        self.started = time.monotonic()

    def measure(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            worker.latencies = []
            worker.empty_measured = 0
            worker.measure_from = now

    def stats(self) -> dict[str, Any]:
        ws = self.workers
        return {
            "time": time.monotonic(),
            "workers": len(ws),
            "heartbeat_s": self.interval,
            "renewals": sum(w.beats for w in ws),
            "claims": sum(w.claims for w in ws),
            "blocking_claims": sum(w.blocking for w in ws),
            "fruitful_claims": sum(w.fruitful for w in ws),
            "woken_empty": sum(w.empty_measured for w in ws),
            "tasks": sum(w.tasks for w in ws),
            "delivered": sum(w.delivered for w in ws),
            "workers_with_tasks": sum(1 for w in ws if w.tasks),
            "errors": sum(w.errors for w in ws) + sum(b.errors for b in self.beaters),
            "latencies": [x for w in ws for x in w.latencies],
        }

    def close(self) -> None:
        self.stop.set()
        for thread in self.claimers:
            thread.join(WAIT_SECONDS + 5)


def raise_file_limit(needed: int) -> None:
    """Allow ``needed`` open files (soft limit up to the hard one; root may raise both)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(needed, soft), max(needed, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    raise_file_limit(spec["count"] * CONNECTIONS_AT_MOST + 256)
    threading.stack_size(THREAD_STACK)
    # Thousands of stores read the same script files: read each once (the scripts are the same)
    lua.script_source = functools.lru_cache(maxsize=None)(lua.script_source)  # type: ignore[assignment]
    os.nice(FLEET_NICE)
    started = time.monotonic()
    fleet = Fleet(spec)
    print(f"fleet: {len(fleet.workers)} registered in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    fleet.start()
    reply({"ready": len(fleet.workers), "setup_s": round(time.monotonic() - started, 2)})
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            reply(fleet.stats())
        elif command == "measure":
            fleet.measure()
            reply({"measuring": True})
        elif command == "stop":
            break
    fleet.close()
    reply({"stopped": True})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
