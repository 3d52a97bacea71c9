"""huey (RedisHuey, notify_result=True): W consumers, each ``-w 1`` (one worker thread).

huey has no pipelined batch enqueue: ``task.map(iterable)`` enqueues one by one, and is
what the batch reading uses.
"""

from __future__ import annotations

import importlib
import os
import sys

from bench.harness import RESULT_TIMEOUT, System


class Huey(System):
    name = "huey"
    batch_api = "task.map() (a loop: no pipelined enqueue)"

    @staticmethod
    def versions() -> dict[str, str]:
        import huey

        return {"huey": huey.__version__}

    def open(self) -> None:
        os.environ["BENCH_REDIS_URL"] = self.url
        self.app = importlib.import_module("bench.systems.huey_app")

    def start_workers(self) -> None:
        code = "from bench.systems.huey_app import run_consumer; run_consumer()"
        for _ in range(self.config.workers):
            self.procs.start([sys.executable, "-c", code], env={"BENCH_REDIS_URL": self.url})

    def _get(self, results: list) -> list:
        return [r.get(blocking=True, timeout=RESULT_TIMEOUT) for r in results]

    def whoami(self, count: int, delay: float) -> list[int]:
        return self._get([self.app.whoami(delay) for _ in range(count)])

    def per_call(self, n: int) -> None:
        self._get([self.app.noop() for _ in range(n)])

    def batch(self, n: int) -> None:
        self.app.noop.map(range(n)).get(blocking=True, timeout=RESULT_TIMEOUT)

    def roundtrip(self) -> None:
        self.app.noop().get(blocking=True, timeout=10)

    def big(self, n: int, payload: bytes) -> None:
        outputs = self._get([self.app.echo(payload) for _ in range(n)])
        if any(len(out) != len(payload) for out in outputs):
            raise RuntimeError("huey: 1 MiB result of the wrong size")

    def enqueue_only(self, n: int) -> None:
        for _ in range(n):
            self.app.noop()


SYSTEM = Huey
