"""One log line when calls to Redis start failing and one when they succeed again, however
many calls fail meanwhile.

Both sides of the queue keep trying through an outage: the worker's threads (the claim
loop each second, the heartbeat twice a second, deliveries: worker/outage.py) and a
manager's round trips (client/reconnect.py).  Each used to log each failure: a 20 s outage
wrote some sixty warnings that all said the same thing.  ``OutageLog`` keeps when the
current outage began and says so twice: when it begins and when it ends (with how long it
lasted).  Further failures go to debug level only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class OutageLog:
    """Tells ``log`` when an outage begins and when it ends; thread-safe (the lines are
    written under its lock, so an outage's end is never logged before its beginning).

    The messages are ``str.format`` templates, filled with ``details`` (fixed for the
    caller's life: an address, a queue) and what each call passes; ``back`` also gets
    ``seconds``, how long the outage lasted."""

    def __init__(self, log: logging.Logger, down: str, back: str, again: str = "", **details: Any) -> None:
        self.log = log
        self.down = down  # at warning level, once per outage
        self.back = back  # at warning level, once per outage
        self.again = again  # at debug level, for each further failure ("" logs nothing)
        self.details = details
        self._lock = threading.Lock()
        self.since: float | None = None  # when the first failed call of this outage failed (monotonic)

    def failed(self, **call: Any) -> bool:
        """A call failed; True when it began an outage (its first failure)."""
        with self._lock:
            if self.since is None:
                self.since = time.monotonic()
                self.log.warning(self.down.format(**self.details, **call))
                return True
            if self.again and self.log.isEnabledFor(logging.DEBUG):
                self.log.debug(self.again.format(**self.details, **call))
            return False

    def succeeded(self, **call: Any) -> None:
        """A call succeeded: the outage, if any, is over."""
        if self.since is None:  # the usual case: nothing to say, no lock taken
            return
        with self._lock:
            if self.since is not None:
                seconds = time.monotonic() - self.since
                self.log.warning(self.back.format(**self.details, **call, seconds=seconds))
                self.since = None

    def lasted(self) -> float:
        """Seconds since the current outage began (0 when there is none)."""
        since = self.since
        return 0.0 if since is None else time.monotonic() - since

    def forget(self) -> None:
        """End the outage without a line (its caller gave up and said so): the next
        failure begins a new one."""
        with self._lock:
            self.since = None
