"""Celery (Redis broker and result backend): ``celery worker --pool=solo`` x W.

Per call: ``task.delay()`` and ``AsyncResult.get()``; batch: ``group(...).apply_async()``
and ``GroupResult.get()``.  Gossip, mingle and the event heartbeat are off (they are
cluster chatter, not task traffic); prefetching stays at Celery's default.
"""

from __future__ import annotations

import importlib
import os
import sys

from bench.harness import RESULT_TIMEOUT, System


class CeleryBench(System):
    name = "celery"
    batch_api = "group(...).apply_async()"

    @staticmethod
    def versions() -> dict[str, str]:
        import celery
        import kombu

        return {"celery": celery.__version__, "kombu": kombu.__version__}

    def open(self) -> None:
        os.environ["BENCH_REDIS_URL"] = self.url
        self.app = importlib.import_module("bench.systems.celery_app")

    def start_workers(self) -> None:
        for index in range(self.config.workers):
            self.procs.start(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench.systems.celery_app",
                    "worker",
                    "--pool=solo",
                    "--concurrency=1",
                    "-n",
                    f"bench{index}@%h",
                    "-Q",
                    "bench",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel=WARNING",
                ],
                # C_FORCE_ROOT: Celery refuses pickle as root (CI runs as root)
                env={"BENCH_REDIS_URL": self.url, "C_FORCE_ROOT": "1"},
            )

    def _get(self, results: list) -> list:
        return [r.get(timeout=RESULT_TIMEOUT) for r in results]

    def whoami(self, count: int, delay: float) -> list[int]:
        return self._get([self.app.whoami.delay(delay) for _ in range(count)])

    def per_call(self, n: int) -> None:
        self._get([self.app.noop.delay() for _ in range(n)])

    def batch(self, n: int) -> None:
        from celery import group

        group(self.app.noop.s() for _ in range(n)).apply_async().get(timeout=RESULT_TIMEOUT)

    def roundtrip(self) -> None:
        self.app.noop.delay().get(timeout=10)

    def big(self, n: int, payload: bytes) -> None:
        outputs = self._get([self.app.echo.delay(payload) for _ in range(n)])
        if any(len(out) != len(payload) for out in outputs):
            raise RuntimeError("celery: 1 MiB result of the wrong size")

    def enqueue_only(self, n: int) -> None:
        from celery import group

        for first in range(0, n, 1000):
            group(self.app.noop.s() for _ in range(min(1000, n - first))).apply_async()


SYSTEM = CeleryBench
