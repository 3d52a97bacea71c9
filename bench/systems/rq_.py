"""RQ: ``SimpleWorker`` x W (runs jobs in its own process: no fork per job).

Per call: ``queue.enqueue``; batch: ``queue.enqueue_many`` (one pipeline per 1000 jobs);
results: ``job.latest_result(timeout=...)`` (XREAD BLOCK on the job's result stream).
"""

from __future__ import annotations

import sys

from bench import tasks
from bench.harness import RESULT_TIMEOUT, System

QUEUE = "bench"
BATCH = 1000


def run_worker(url: str) -> None:
    from redis import Redis
    from rq import Queue, SimpleWorker

    connection = Redis.from_url(url)
    SimpleWorker([Queue(QUEUE, connection=connection)], connection=connection).work(logging_level="WARNING")


class RQ(System):
    name = "rq"
    batch_api = f"enqueue_many({BATCH})"

    @staticmethod
    def versions() -> dict[str, str]:
        import rq

        return {"rq": rq.__version__}

    def open(self) -> None:
        from redis import Redis
        from rq import Queue

        self.connection = Redis.from_url(self.url)
        self.queue = Queue(QUEUE, connection=self.connection)

    def close(self) -> None:
        connection = getattr(self, "connection", None)
        if connection is not None:
            connection.close()
            self.connection = None

    def start_workers(self) -> None:
        code = "import sys; from bench.systems.rq_ import run_worker; run_worker(sys.argv[1])"
        for _ in range(self.config.workers):
            self.procs.start([sys.executable, "-c", code, self.url])

    def _results(self, jobs: list) -> list:
        from rq.results import Result

        out = []
        for job in jobs:
            result = job.latest_result(timeout=int(RESULT_TIMEOUT))
            if result is None:
                self.procs.check_alive()
                raise TimeoutError(f"rq: job {job.id} had no result within {RESULT_TIMEOUT} s")
            if result.type != Result.Type.SUCCESSFUL:
                raise RuntimeError(f"rq: job {job.id} failed: {result.exc_string}")
            out.append(result.return_value)
        return out

    def _enqueue_many(self, func, n: int) -> list:
        from rq import Queue

        jobs = []
        for first in range(0, n, BATCH):
            jobs += self.queue.enqueue_many([Queue.prepare_data(func) for _ in range(min(BATCH, n - first))])
        return jobs

    def whoami(self, count: int, delay: float) -> list[int]:
        return self._results([self.queue.enqueue(tasks.whoami, delay) for _ in range(count)])

    def per_call(self, n: int) -> None:
        self._results([self.queue.enqueue(tasks.noop) for _ in range(n)])

    def batch(self, n: int) -> None:
        self._results(self._enqueue_many(tasks.noop, n))

    def roundtrip(self) -> None:
        self._results([self.queue.enqueue(tasks.noop)])

    def big(self, n: int, payload: bytes) -> None:
        outputs = self._results([self.queue.enqueue(tasks.echo, payload) for _ in range(n)])
        if any(len(out) != len(payload) for out in outputs):
            raise RuntimeError("rq: 1 MiB result of the wrong size")

    def enqueue_only(self, n: int) -> None:
        self._enqueue_many(tasks.noop, n)


SYSTEM = RQ
