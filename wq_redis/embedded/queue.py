"""The queue and executor that ``import wq_redis as wq`` gives: the client's, plus what a
laptop needs with no Redis of its own.  With no URL (argument, ``WQ_REDIS_URL`` or
``REDIS_URL``) a private Redis server starts (server.py, shared by the process's queues and
stopped with the last of them), and ``local_workers=N`` starts N worker processes on this
machine (local_workers.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..client.executor import Executor as ClientExecutor
from ..client.queue import WorkQueue as ClientWorkQueue
from .local_workers import LocalWorkers
from .server import acquire_embedded, release_embedded


class WorkQueue(ClientWorkQueue):
    __doc__ = ClientWorkQueue.__doc__

    def _start_local_redis(self) -> str:
        return acquire_embedded()

    def _stop_local_redis(self) -> None:
        release_embedded()

    def _start_local_workers(self, count: int, resources: Mapping[str, Any] | None) -> LocalWorkers:
        return LocalWorkers(self.redis_url, self.name, count, resources, env=self.worker_environment())


class Executor(ClientExecutor):
    __doc__ = ClientExecutor.__doc__
    queue_type = WorkQueue
