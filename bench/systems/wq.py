"""wq-redis: ``submit`` per task, ``submit_many`` in batches, ``map``, command tasks.

Workers: ``wq-redis worker --cores 1`` x W (each runs one task at a time, in its warm
Python child for PythonTasks, ``/bin/sh -c`` for command tasks).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import wq_redis as wq
from bench import tasks
from bench.harness import System

QUEUE = "bench"
SUBMIT_BATCH = 1000  # tasks per submit_many call (the same as map's batches)


class WQ(System):
    name = "wq"
    batch_api = f"submit_many({SUBMIT_BATCH})"

    @staticmethod
    def versions() -> dict[str, str]:
        return {"wq_redis": f"{wq.__version__} ({wq.__file__})"}

    def open(self) -> None:
        self.q = wq.WorkQueue(QUEUE, redis_url=self.url)

    def close(self) -> None:
        q = getattr(self, "q", None)
        if q is not None:
            q.close()
            self.q = None

    def start_workers(self) -> None:
        for index in range(self.config.workers):
            self.procs.start(
                [
                    sys.executable,
                    "-m",
                    "wq_redis",
                    "worker",
                    "--redis-url",
                    self.url,
                    "--queue",
                    QUEUE,
                    "--cores",
                    "1",
                    "--name",
                    f"bench{index}",
                    "--log-level",
                    "warning",
                ]
            )

    # -- helpers -----------------------------------------------------------------------
    def _collect(self, n: int) -> list[Any]:
        """Wait for ``n`` tasks; their outputs (a failed task fails the reading)."""
        outputs = []
        for _ in range(n):
            task = self.q.wait(60)
            if task is None:
                self.procs.check_alive()
                raise TimeoutError(f"wq: only {len(outputs)} of {n} tasks came back within 60 s")
            if task.result != wq.WORK_QUEUE_RESULT_SUCCESS:
                raise RuntimeError(
                    f"wq: task {task.id} failed: {task.result_str} {task.error or ''} {task.std_output or ''}"
                )
            outputs.append(task.output)
        return outputs

    def _submit_batches(self, make: Callable[[], wq.Task], n: int) -> None:
        for first in range(0, n, SUBMIT_BATCH):
            self.q.submit_many([make() for _ in range(min(SUBMIT_BATCH, n - first))])

    # -- operations --------------------------------------------------------------------
    def whoami(self, count: int, delay: float) -> list[int]:
        self.q.submit_many([wq.PythonTask(tasks.whoami, delay) for _ in range(count)])
        return self._collect(count)

    def per_call(self, n: int) -> None:
        for _ in range(n):
            self.q.submit(wq.PythonTask(tasks.noop))
        self._collect(n)

    def batch(self, n: int) -> None:
        self._submit_batches(lambda: wq.PythonTask(tasks.noop), n)
        self._collect(n)

    def map(self, n: int) -> None:
        results = self.q.map(tasks.noop, range(n), progress=False)
        if len(results) != n or any(r is not None for r in results):
            raise RuntimeError("wq: map returned wrong results")

    def commands(self, n: int) -> None:
        self._submit_batches(lambda: wq.Task("/bin/true"), n)
        for _ in range(n):
            task = self.q.wait(60)
            if task is None:
                raise TimeoutError("wq: command tasks did not come back within 60 s")
            if task.result != wq.WORK_QUEUE_RESULT_SUCCESS or task.return_status != 0:
                raise RuntimeError(f"wq: command task failed: {task.result_str} {task.error}")

    def roundtrip(self) -> None:
        self.q.submit(wq.PythonTask(tasks.noop))
        task = self.q.wait(10)
        if task is None or task.result != wq.WORK_QUEUE_RESULT_SUCCESS:
            raise RuntimeError(f"wq: round trip failed: {task!r}")

    def big(self, n: int, payload: bytes) -> None:
        for _ in range(n):
            self.q.submit(wq.PythonTask(tasks.echo, payload))
        if any(len(out) != len(payload) for out in self._collect(n)):
            raise RuntimeError("wq: 1 MiB result of the wrong size")

    def enqueue_only(self, n: int) -> None:
        self._submit_batches(lambda: wq.PythonTask(tasks.noop), n)

    def extra_rates(self) -> dict[str, Callable[[int], None]]:
        return {"map": self.map, "cmd": self.commands}


SYSTEM = WQ
