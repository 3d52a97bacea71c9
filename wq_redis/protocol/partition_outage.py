"""A sharded queue's partitions that do not answer now: skipped, while the others go on.

On Redis Cluster a sharded queue's partitions live on different primaries
(partitions.py).  When the primary of partition i > 0 dies, the cluster needs
``cluster-node-timeout`` and an election before its replica serves the slot; meanwhile
every call to that partition fails.  Were such a failure raised as a whole-Redis outage
(as it is for an unsharded queue), the worker's claim loop and heartbeat and the
manager's ``wait`` would retry it, and the whole queue would stop for the outage's
length.  Instead the sharded stores (client/shards.py, worker/partitions.py) catch it
per partition: the partition is skipped for ``BACKOFF_SECONDS`` (a connect to a dead
host is not paid at every call), then asked again; the other partitions' tasks are
claimed, run, renewed and retrieved meanwhile.  What the down partition was to get
waits: finished results stay with the worker, acknowledgements with the manager.

What counts as "does not answer" is ``pipeline.outage`` (a ConnectionError, including
cluster.py's ``SlotMoved`` for MOVED/ASK/TRYAGAIN/CLUSTERDOWN, a TimeoutError, a server
that takes no writes now): the same test by which every caller rides out an outage.

Partition 0 holds the queue's control plane (ids, workers' records and heartbeats, wake
and control keys, functions, the doorbell): its failures are raised as before, and the
queue pauses while it is away, as an unsharded queue does.

One log line when a partition stops answering and one when it answers again
(outage.py's ``OutageLog``), however many calls skip it meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .cluster import is_cluster
from .outage import OutageLog
from .pipeline import described, outage

T = TypeVar("T")
BACKOFF_SECONDS = 0.5  # a partition found down is not asked again before this (also: how late its return is seen)


def fail_fast(cluster: Any, stores: Sequence[Any]) -> None:
    """On a cluster, let the calls of partitions i > 0 (``stores``, each with a queue
    client of its own: cluster.queue_client) retry once (a connection cut at the wrong
    moment, a MOVED followed) instead of the connection's retry policy, whose backoff
    rides out ~9 s: longer outages are this module's to skip.  On a single Redis every
    partition shares partition 0's client and its server's outages: nothing changes."""
    if not is_cluster(cluster):
        return
    for store in stores:
        store.client.set_retry(Retry(NoBackoff(), 1))


class DownPartitions:
    """Which partitions i > 0 of one queue are skipped now (see the module's doc);
    shared by the threads of a worker (claim loop, heartbeat), hence only dict updates
    and OutageLog (thread-safe)."""

    def __init__(self, log: logging.Logger, queue: str, meanwhile: str) -> None:
        self.queue = queue
        self._until: dict[int, float] = {}  # partition -> when it may be asked again (monotonic)
        self._logs: dict[int, OutageLog] = {}
        self._log = log
        self._meanwhile = meanwhile  # what the caller does while a partition is away, for the log

    def skipped(self, part: int) -> bool:
        """Whether ``part`` is down and its back-off not over: not asked now."""
        until = self._until.get(part)
        return until is not None and time.monotonic() < until

    def down(self) -> list[int]:
        """The partitions found down that have not answered since (back-off over or not)."""
        return sorted(self._until)

    def failed(self, part: int, what: str, error: BaseException) -> None:
        """A call to ``part`` raised ``error``: re-raised unless ``part`` > 0 and it is an
        outage, which marks the partition down (one log line per outage)."""
        if part == 0 or not outage(error):
            raise error
        self._until[part] = time.monotonic() + BACKOFF_SECONDS
        log = self._logs.get(part)
        if log is None:
            log = self._logs[part] = OutageLog(
                self._log,
                down="partition {part} of queue {queue!r} does not answer ({what}: {error}); {meanwhile}",
                again="partition {part} of queue {queue!r}: {what} failed again ({error})",
                back="partition {part} of queue {queue!r} answers again after {seconds:.1f} s",
                part=part,
                queue=self.queue,
                meanwhile=self._meanwhile,
            )
        log.failed(what=what, error=described(error))

    def ask(self, part: int, what: str, call: Callable[[], T], otherwise: T) -> T:
        """``call()``, a call to partition ``part``; ``otherwise`` without calling while the
        partition is skipped, or when the call finds it down (an outage of partition i > 0:
        ``failed``; any other error is raised).  An answer ends its outage."""
        if part and self.skipped(part):
            return otherwise
        try:
            answer = call()
        except redis.RedisError as exc:
            self.failed(part, what, exc)
            return otherwise
        self.answered(part)
        return answer

    def answered(self, part: int) -> bool:
        """A call to ``part`` succeeded; True when that ends its outage."""
        if part not in self._until:  # the usual case: a dict lookup
            return False
        if self._until.pop(part, None) is None:  # (another thread saw it answer first)
            return False
        self._logs[part].succeeded()
        return True
