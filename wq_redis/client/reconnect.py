"""A manager's round trips ride out Redis outages for a while instead of dying at once.

Redis may be away for a restart, a failover or a network fault: the workers hold their
results and deliver them later, so a manager that keeps trying loses nothing.  Every
manager round trip goes through ``Reconnect.call``: on a connection error it retries
with backoff until Redis answers or ``reconnect_timeout`` seconds have passed since the
outage began, logging once when it starts waiting and once when Redis is back.  An
outage is what ``protocol.pipeline.outage`` says: refused or dropped connections,
timeouts, a Redis still loading its data (BusyLoadingError is a ConnectionError), and a
Redis that takes no writes for now (READONLY from a master demoted under a plain
``redis://`` URL, NOREPLICAS, MASTERDOWN).  Only
then does it raise ``RedisUnavailable``, which says how to re-attach: the tasks already
submitted stay in Redis.

redis-py's own retries (a few quick ones, for a connection cut at the wrong moment) run
inside each try; this loop is for outages longer than that.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from ..protocol.connection import RedisUnavailable, safe_url
from ..protocol.outage import OutageLog
from ..protocol.pipeline import described, outage

log = logging.getLogger("wq_redis.client.queue")
T = TypeVar("T")

DEFAULT_RECONNECT_TIMEOUT = 60.0
FIRST_DELAY, MAX_DELAY = 0.1, 2.0


def reconnect_timeout_from(value: float | None) -> float:
    """The value given, else ``WQ_RECONNECT_TIMEOUT``, else 60 seconds."""
    if value is None:
        text = os.environ.get("WQ_RECONNECT_TIMEOUT")
        if not text:
            return DEFAULT_RECONNECT_TIMEOUT
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"WQ_RECONNECT_TIMEOUT must be a number of seconds, got {text!r}") from None
    value = float(value)
    if not value >= 0:
        raise ValueError(f"reconnect_timeout must be a non-negative number of seconds, got {value!r}")
    return value


class Reconnect:
    """Retries a manager's calls through Redis outages of up to ``timeout`` seconds."""

    def __init__(self, url: str, queue: str, timeout: float) -> None:
        self.url = safe_url(url)
        self.queue = queue
        self.timeout = timeout
        self._outage = OutageLog(
            log,
            down="Redis at {url} is unreachable or takes no writes ({error}); queue {queue!r} waits for it for up "
            "to {timeout:g} s",
            back="Redis at {url} is back after {seconds:.1f} s; queue {queue!r} goes on",
            url=self.url,
            queue=queue,
            timeout=timeout,
        )

    def call(self, operation: Callable[[], T]) -> T:
        """``operation()``, tried again with backoff while Redis is unreachable; raises
        ``RedisUnavailable`` once the outage has lasted ``timeout`` seconds."""
        delay = FIRST_DELAY
        while True:
            try:
                result = operation()
            except redis.RedisError as exc:
                if not outage(exc):
                    raise
                self._outage.failed(error=described(exc))
                waited = self._outage.lasted()
                if waited + delay > self.timeout:
                    self._outage.forget()  # a later call waits again, from then on
                    raise RedisUnavailable(
                        f"Redis at {self.url} has been unreachable or read-only for {waited:.0f} s "
                        f"(reconnect_timeout={self.timeout:g}): {described(exc)}.  The tasks already submitted are "
                        f"kept in Redis: once it is back, WorkQueue({self.queue!r}) on the same Redis re-attaches "
                        "to them"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
                continue
            self._outage.succeeded()
            return result
