"""How the worker tells the log of trouble with Redis without flooding it.

An outage: one log line when the worker's calls to Redis start failing and one when they
succeed again, however many calls fail meanwhile (``RedisOutage``: the worker's messages
for protocol/outage.py's ``OutageLog``, which tells why).  A broken key (one of the
queue's keys holding the wrong type): counted every time, logged at most once a minute
each (``BrokenKeys``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from ..protocol.cluster import address as cluster_address
from ..protocol.outage import OutageLog
from ..protocol.pipeline import described, outage
from ..protocol.sentinel import address as sentinel_address

log = logging.getLogger("wq_redis.worker")
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.1, 2.0  # ``ride_out``'s backoff
BROKEN_KEY_LOG_SECONDS = 60.0  # a key of the wrong type is logged at most this often (it is counted every time)


def redis_address(client: redis.Redis) -> str:
    """Where ``client`` connects, for messages: never its password."""
    found = cluster_address(client) or sentinel_address(client.connection_pool)
    if found:
        return found
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


class RedisOutage:
    """Tells the log when Redis stops answering the worker's calls, and when it is back.
    Shared by the worker's threads (the claim loop, the heartbeat)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._log = OutageLog(
            log,
            down="calls to Redis at {address} fail ({what}: {error}); retrying until it answers (finished results "
            "are held, leases renewed once it is back)",
            again="{what} failed again ({error})",
            back="Redis at {address} answers again after {seconds:.1f} s",
            address=address,
        )

    def failed(self, what: str, exc: BaseException) -> None:
        self._log.failed(what=what, error=described(exc))

    def succeeded(self) -> None:
        if self._log.since is None:  # the usual case (every claim): not even a call
            return
        self._log.succeeded()

    def ride_out(self, what: str, call: Callable[[], None], stopping: Callable[[], bool]) -> bool:
        """``call()`` until it gets through an outage (``protocol.pipeline.outage``: Redis
        unreachable, or taking no writes: a demoted master, NOREPLICAS), with backoff up
        to RETRY_MAX_SECONDS; for the calls a worker makes once, at start (its
        registration), which would otherwise end it.  False when ``stopping()`` turned
        true first (a signal); any other error is raised."""
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                call()
            except redis.RedisError as exc:
                if not outage(exc):
                    raise
                self.failed(what, exc)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if stopping():
                        return False
                    time.sleep(min(0.1, delay))
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            self.succeeded()
            return True


class BrokenKeys:
    """Keys of the queue a claim, a delivery or a heartbeat could not read or write (wrong
    type): skipped (results that must be written there are held and sent again, see
    ``Outbox.delivered``), counted every time, logged at most once a minute each."""

    def __init__(self, count: Callable[[str], None] | None) -> None:
        self.count = count  # the metrics' counter, if the worker serves metrics
        self._logged: dict[str, float] = {}  # key -> when last logged (monotonic)

    def report(self, keys: list[tuple[str, str]]) -> None:
        """``keys``: (key, error) as the store reports them."""
        now = time.monotonic()
        for key, error in keys:
            if self.count is not None:
                self.count(key)
            if now - self._logged.get(key, float("-inf")) >= BROKEN_KEY_LOG_SECONDS:
                self._logged[key] = now
                log.error(
                    "cannot read %s (%s): skipped, the rest of the queue is served (results to be written "
                    "there are held until it is repaired); delete or repair that key (this message repeats at "
                    "most every %.0f s)",
                    key,
                    error,
                    BROKEN_KEY_LOG_SECONDS,
                )
