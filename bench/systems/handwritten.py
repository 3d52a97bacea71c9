"""The ceiling: a minimal hand-written redis-py queue (two lists, pickled tuples).

Per call: one RPUSH per task; each worker BLPOPs one task, runs it and RPUSHes its result;
the client BLPOPs results one at a time (one command per round trip everywhere).
Batch: the client sends pipelines of 100 RPUSHes; a worker BLPOPs one task and LPOPs up
to 99 more, runs them and RPUSHes all results in one command; the client pops results
1000 at a time.  No acknowledgements, no leases, no retries: nothing a real system needs.
"""

from __future__ import annotations

import pickle
import sys
import time

import redis

from bench import tasks
from bench.harness import RESULT_TIMEOUT, System

TASKS = "hw:tasks"
RESULTS = "hw:results"
PIPELINE = 100  # pushes per pipeline, and tasks a worker pops at once, in batch mode
FUNCTIONS = {"noop": tasks.noop, "echo": tasks.echo, "whoami": tasks.whoami}


def run_worker(url: str, pop: int) -> None:
    """The worker loop (``python -c``, see ``start_workers``); SIGTERM ends it."""
    client = redis.Redis.from_url(url)
    while True:
        item = client.blpop([TASKS], timeout=1)
        if item is None:
            continue
        messages = [item[1]]
        if pop > 1:
            messages += client.lpop(TASKS, pop - 1) or []
        results = []
        for message in messages:
            task_id, name, args = pickle.loads(message)
            results.append(pickle.dumps((task_id, FUNCTIONS[name](*args)), protocol=pickle.HIGHEST_PROTOCOL))
        client.rpush(RESULTS, *results)


def _message(task_id: int, name: str, *args: object) -> bytes:
    return pickle.dumps((task_id, name, args), protocol=pickle.HIGHEST_PROTOCOL)


class Handwritten(System):
    name = "handwritten"
    batch_api = f"{PIPELINE}-push pipelines, workers pop {PIPELINE}"
    mode = 0  # tasks a worker pops at once; 0 = not started

    @staticmethod
    def versions() -> dict[str, str]:
        return {"redis-py": redis.__version__}

    def open(self) -> None:
        self.client = redis.Redis.from_url(self.url, socket_timeout=RESULT_TIMEOUT + 5)
        self.next_id = 0

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
            self.client = None

    def start_workers(self, pop: int = 1) -> None:
        self.mode = pop
        code = "import sys; from bench.systems.handwritten import run_worker; run_worker(sys.argv[1], int(sys.argv[2]))"
        for _ in range(self.config.workers):
            self.procs.start([sys.executable, "-c", code, self.url, str(pop)])

    def stop_workers(self) -> None:
        super().stop_workers()
        self.mode = 0

    def phase(self, name: str) -> None:
        want = PIPELINE if name == "batch" else 1
        if self.mode and self.mode != want:
            self.stop_workers()
            self.start_workers(want)
            self.wait_ready()

    # -- helpers -------------------------------------------------------------------------
    def _ids(self, n: int) -> range:
        first = self.next_id
        self.next_id += n
        return range(first, first + n)

    def _collect_one_by_one(self, ids: range) -> list[object]:
        out = {}
        for _ in ids:
            item = self.client.blpop([RESULTS], timeout=RESULT_TIMEOUT)
            if item is None:
                self.procs.check_alive()
                raise TimeoutError(f"handwritten: {len(out)} of {len(ids)} results within {RESULT_TIMEOUT} s")
            task_id, value = pickle.loads(item[1])
            out[task_id] = value
        if set(out) != set(ids):
            raise RuntimeError("handwritten: results of the wrong tasks")
        return list(out.values())

    def _collect_batched(self, ids: range) -> None:
        got = 0
        deadline = time.monotonic() + RESULT_TIMEOUT
        while got < len(ids):
            items = self.client.lpop(RESULTS, 1000)
            if not items:
                item = self.client.blpop([RESULTS], timeout=1)
                if item is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"handwritten: {got} of {len(ids)} results")
                    continue
                items = [item[1]]
            for item in items:
                pickle.loads(item)
            got += len(items)
            deadline = time.monotonic() + RESULT_TIMEOUT

    # -- operations ----------------------------------------------------------------------
    def whoami(self, count: int, delay: float) -> list[int]:
        ids = self._ids(count)
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.rpush(TASKS, _message(task_id, "whoami", delay))
        pipe.execute()
        return self._collect_one_by_one(ids)  # type: ignore[return-value]

    def per_call(self, n: int) -> None:
        ids = self._ids(n)
        for task_id in ids:
            self.client.rpush(TASKS, _message(task_id, "noop"))
        self._collect_one_by_one(ids)

    def batch(self, n: int) -> None:
        ids = self._ids(n)
        self._push_pipelined(ids)
        self._collect_batched(ids)

    def _push_pipelined(self, ids: range) -> None:
        for first in range(0, len(ids), PIPELINE):
            pipe = self.client.pipeline(transaction=False)
            for task_id in ids[first : first + PIPELINE]:
                pipe.rpush(TASKS, _message(task_id, "noop"))
            pipe.execute()

    def roundtrip(self) -> None:
        (task_id,) = self._ids(1)
        self.client.rpush(TASKS, _message(task_id, "noop"))
        self._collect_one_by_one(range(task_id, task_id + 1))

    def big(self, n: int, payload: bytes) -> None:
        ids = self._ids(n)
        for task_id in ids:
            self.client.rpush(TASKS, _message(task_id, "echo", payload))
        if any(len(v) != len(payload) for v in self._collect_one_by_one(ids)):  # type: ignore[arg-type]
            raise RuntimeError("handwritten: 1 MiB result of the wrong size")

    def enqueue_only(self, n: int) -> None:
        self._push_pipelined(self._ids(n))


SYSTEM = Handwritten
