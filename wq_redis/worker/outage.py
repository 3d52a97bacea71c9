"""One log line when the worker's calls to Redis start failing and one when they succeed
again, however many calls fail meanwhile.

During an outage every part of a worker keeps trying (the claim loop each second, the
heartbeat twice a second, deliveries), and each used to log each failure: a 20 s outage
wrote some sixty warnings that all said the same thing.  The details of each failure stay
at debug level.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

log = logging.getLogger("wq_redis.worker")


def redis_address(client: redis.Redis) -> str:
    """Where ``client`` connects, for messages: never its password."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


class RedisOutage:
    """Tells the log when Redis stops answering the worker's calls, and when it is back.
    Shared by the worker's threads (the claim loop, the heartbeat)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._lock = threading.Lock()
        self._since: float | None = None  # when the first call of this outage failed

    def failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                log.warning(
                    "calls to Redis at %s fail (%s: %s); retrying until it answers (finished results "
                    "are held, leases renewed once it is back)",
                    self.address,
                    what,
                    exc,
                )
            else:
                log.debug("%s failed again (%s)", what, exc)

    def succeeded(self) -> None:
        if self._since is None:  # the usual case: nothing to say, no lock taken
            return
        with self._lock:
            if self._since is not None:
                log.warning("Redis at %s answers again after %.1f s", self.address, time.monotonic() - self._since)
                self._since = None
