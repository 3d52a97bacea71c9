"""Telling a process's Sentinel clients at once that the master moved: the sentinels'
``+switch-master`` event, pushed on Pub/Sub, one connection per process.

Why at all: redis-py asks the sentinels for the master only when a connection opens, and
a connection to the old master learns of a failover only when that server refuses a
write.  After ``SENTINEL FAILOVER`` the old master goes on taking writes until the
sentinels reconfigure it, seconds later: claims and completions written there meanwhile
are lost with it (the issue measured 850 tasks run twice), and a worker blocked in BLPOP
there waits on a server nobody writes to.

Why events, not polling: a poll costs every process a sentinel call per period whether or
not anything happens (issue 17: thousands of workers, two processes each).  A sentinel
publishes ``+switch-master <service> <old ip> <old port> <new ip> <new port>`` when it
takes the new configuration; one subscription per process (``SwitchWatch``, shared by all
of its clients of the same sentinels, whatever their service) costs one idle connection
and a PING every HEALTH_SECONDS, nothing else.  When that sentinel goes away the watch
subscribes to the next one, and then asks it once, per service, where the master is: an
event published while it was not subscribed is not missed.

On a switch the watch first waits until the sentinels redis-py asks name the new master
(the one that published may be ahead of the others by a hello message), then cuts every
connection of the service's pools with redis-py's public ``ConnectionPool.disconnect``,
in use or not.  Cutting a connection another thread is reading is what that call is
documented for ("potentially by other threads"): it shuts the socket down before
closing it, so the owner's blocked read ends at once, and redis-py's readers turn a
socket closed under them into ConnectionError (they bind the socket and parser locally
for that purpose).  The owner sees what it sees on any dropped connection and retries on
a fresh one, which asks the sentinels; each of our calls is safe to repeat (the scripts'
headers).  Without the watch the same calls would end the same way, only later: a write
refused READONLY once the old master is demoted, a BLPOP ended by its UNBLOCKED error or
its BLOCK_SECONDS bound (both turned into ConnectionError by redis-py's Sentinel
connection).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, ClassVar

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

log = logging.getLogger("wq_redis.protocol.sentinel")
CHANNEL = "+switch-master"
HEALTH_SECONDS = 30.0  # a PING on the subscription when idle this long: a silent sentinel is noticed
AGREE_SECONDS = 5.0  # the most a switch waits for the sentinels redis-py asks to name the new master
RETRY_SECONDS = 1.0  # after every sentinel failed in turn, before trying them again


class SwitchWatch:
    """One thread per process and sentinel set: subscribes to ``+switch-master`` on one
    sentinel and cuts the connections of the pools ``add``ed for the service that moved."""

    _watches: ClassVar[dict[int, SwitchWatch]] = {}  # id(manager) -> its watch
    _lock = threading.Lock()

    def __init__(self, manager: Sentinel) -> None:
        self.manager = manager
        self.pid = os.getpid()
        self.pools: list[weakref.ReferenceType[SentinelConnectionPool]] = []
        self.thread: threading.Thread | None = None
        self.subscribed = threading.Event()  # set while a subscription is live (for tests, messages)

    @classmethod
    def add(cls, manager: Sentinel, pool: SentinelConnectionPool) -> SwitchWatch:
        """Watch ``pool`` (a master pool of ``manager``), starting the watch of
        ``manager``'s sentinels if this process has none running."""
        with cls._lock:
            watch = cls._watches.get(id(manager))
            if watch is None or watch.pid != os.getpid():  # a forked child has no thread
                watch = cls._watches[id(manager)] = SwitchWatch(manager)
            watch.pools.append(weakref.ref(pool))
            if watch.thread is None:
                watch.thread = threading.Thread(target=watch._run, name="wq-sentinel-watch", daemon=True)
                watch.thread.start()
            return watch

    def _live_pools(self) -> list[SentinelConnectionPool]:
        """The pools still in use; when none is, the watch ends (under the lock, so that
        an ``add`` meanwhile starts a new thread)."""
        with self._lock:
            pools = [pool for pool in (ref() for ref in self.pools) if pool is not None]
            self.pools = [weakref.ref(pool) for pool in pools]
            if not pools:
                self.thread = None
                self.subscribed.clear()
            return pools

    def _run(self) -> None:
        while True:
            for client in list(self.manager.sentinels):
                if not self._live_pools():
                    return
                try:
                    self._listen(client)
                except redis.RedisError as exc:  # that sentinel went away: the next one
                    self.subscribed.clear()
                    log.debug("sentinel watch: %s: %s; trying the next sentinel", client, exc)
                except _NoPools:
                    return
            time.sleep(RETRY_SECONDS)  # none answered: not a busy loop while all are away

    def _listen(self, sentinel: redis.Redis) -> None:
        """Subscribe on ``sentinel`` and handle its events until it fails (RedisError) or
        no pool is left (_NoPools)."""
        kwargs = sentinel.connection_pool.connection_kwargs
        client = redis.Redis(
            host=kwargs["host"],
            port=kwargs["port"],
            **{**self.manager.sentinel_kwargs, "health_check_interval": HEALTH_SECONDS},
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            self.subscribed.set()
            self._catch_up(client)
            while True:
                message = pubsub.get_message(timeout=HEALTH_SECONDS)
                if not self._live_pools():
                    raise _NoPools
                if message is not None and message.get("type") == "message":
                    self._switched(message["data"])
        finally:
            pubsub.close()
            client.close()

    def _catch_up(self, sentinel: redis.Redis) -> None:
        """Once per subscription: a pool whose known master is not the one ``sentinel``
        names missed a switch while no subscription was live."""
        for service in {pool.service_name for pool in self._live_pools()}:
            found: Any = sentinel.sentinel_get_master_addr_by_name(service)
            if found:
                now = (_text(found[0]), int(found[1]))
                self._cut(service, now, only_if_elsewhere=True)

    def _switched(self, data: bytes | str) -> None:
        """``+switch-master``: ``service old-ip old-port new-ip new-port``."""
        fields = _text(data).split()
        if len(fields) != 5 or not fields[4].isdigit():
            return
        service, new = fields[0], (fields[3], int(fields[4]))
        log.info("sentinel watch: the master of %s moved to %s:%d", service, *new)
        self._cut(service, new)

    def _cut(self, service: str, new: tuple[str, int], only_if_elsewhere: bool = False) -> None:
        pools = [pool for pool in self._live_pools() if pool.service_name == service]
        if only_if_elsewhere:
            pools = [pool for pool in pools if pool.master_address not in (None, new)]
        if not pools:
            return
        agreed = self._agree(service, new)
        for pool in pools:
            pool.disconnect(inuse_connections=True)
        log.debug("sentinel watch: cut %d pool(s) of %s (sentinels agree: %s)", len(pools), service, agreed)

    def _agree(self, service: str, new: tuple[str, int]) -> bool:
        """Until the sentinels redis-py asks name ``new`` (or AGREE_SECONDS): connections
        opened after the cut must not find the old master through a sentinel that has not
        heard yet.  One call per failover, a few where a sentinel lags."""
        deadline = time.monotonic() + AGREE_SECONDS
        while time.monotonic() < deadline:
            try:
                found = self.manager.discover_master(service)
                if (_text(found[0]), int(found[1])) == new:
                    return True
            except redis.RedisError:
                pass
            time.sleep(0.05)
        return False


class _NoPools(Exception):
    """Every pool watched is gone: the watch ends."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
