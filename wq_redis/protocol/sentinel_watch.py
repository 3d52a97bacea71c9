"""Telling a process's Sentinel clients at once that the master is moving: the
sentinels' failover events, pushed on Pub/Sub.

Why at all: redis-py asks the sentinels for the master only when a connection opens, and
a connection to the old master learns of a failover only when that server refuses a
write.  After ``SENTINEL FAILOVER`` the old master goes on taking writes until the
sentinels reconfigure it, seconds later: claims and completions written there meanwhile
are lost with it (the issue measured 850 tasks run twice), and a worker blocked in BLPOP
there waits on a server nobody writes to.

Why from the first event, not ``+switch-master``: the sentinels announce the new master
once they have seen it promoted, on their next look at it (each second during a
failover), and the old master takes writes all that while: with 10 ms tasks, a second
of claims and completions (measured: 340 of 800 tasks run twice).  The sentinel leading
the failover publishes ``+selected-slave`` (the replica it will promote, about 50 ms
before it sends it REPLICAOF NO ONE), then ``+promoted-slave`` once it saw it promoted,
then ``+switch-master``.  At ``+selected-slave`` the watch starts a ``Move``: every
connection of the service's pools is cut and connections opening meanwhile wait; writes
sent before the cut reach the replica before its promotion (they are streamed to it as
they happen), and none follow.  At ``+promoted-slave`` (or ``+switch-master``) the move
ends and the waiting connections open on the new master; an abort (``-failover-abort-*``)
or MOVE_SECONDS without news ends it with nothing learnt, and connections ask the
sentinels again.  A run pauses about a second, instead of redoing a second of work.

Only the leader publishes its failover's steps, and any sentinel may lead, so the watch
subscribes on every sentinel: one idle connection per sentinel and process, and a PING
every HEALTH_SECONDS, nothing else (issue 17: thousands of workers; no polling).  When a
subscription is lost the watch subscribes again, and asks that sentinel once, per
service, where the master is: an event published while it was not subscribed is not
missed.

On ``+switch-master`` the watch first waits until the sentinels redis-py asks name the new
master (the one that published may be ahead of the others by a hello message), then cuts
every connection of the service's pools with redis-py's public
``ConnectionPool.disconnect``, in use or not (unless a move already put them there).
Cutting a connection another thread is reading is what that call is documented for
("potentially by other threads"): it shuts the socket down before closing it, so the
owner's blocked read ends at once, and redis-py's readers turn a socket closed under
them into ConnectionError (they bind the socket and parser locally for that purpose).
The owner sees what it sees on any dropped connection and retries on a fresh one; each
of our calls is safe to repeat (the scripts' headers).  Without the watch the same calls
would end the same way, only later: a write refused READONLY once the old master is
demoted, a BLPOP ended by its UNBLOCKED error or its BLOCK_SECONDS bound (both turned
into ConnectionError by redis-py's Sentinel connection).
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
SWITCH = "+switch-master"  # service old-ip old-port new-ip new-port
SELECTED = "+selected-slave"  # slave ip:port ip port @ service master-ip master-port
PROMOTED = "+promoted-slave"  # the same fields
ABORTS = ("-failover-abort-not-elected", "-failover-abort-no-good-slave", "-failover-abort-slave-timeout")
CHANNELS = (SWITCH, SELECTED, PROMOTED, *ABORTS)
HEALTH_SECONDS = 30.0  # a PING on a subscription idle this long: a silent sentinel is noticed
AGREE_SECONDS = 5.0  # the most a switch waits for the sentinels redis-py asks to name the new master
RETRY_SECONDS = 1.0  # before subscribing again on a sentinel that went away
# The most a connection waits for a move to end: a failover promotes its replica within
# a second or two; one that takes longer (failover-timeout is minutes) is not waited for.
MOVE_SECONDS = 10.0
# How long a move's address is used without asking the sentinels, after it ended, where no
# +switch-master came (the sentinels name the new master well within this).
MOVED_SECONDS = 30.0

Address = tuple[str, int]


class Move:
    """A failover of one service under way: the replica the leader chose, and once the move
    ends, the address to open connections on (None: ask the sentinels)."""

    def __init__(self, target: Address) -> None:
        self.target = target
        self.address: Address | None = None
        self.ended = threading.Event()
        self.deadline = time.monotonic() + MOVE_SECONDS
        self.expires = self.deadline + MOVED_SECONDS

    def wait(self) -> Address | None:
        """Where to connect, once the move ended; None once MOVE_SECONDS passed without
        news since it began (the move ends so: later connections ask the sentinels at once,
        and news that comes after changes nothing)."""
        if not self.ended.wait(max(self.deadline - time.monotonic(), 0.0)):
            self.ended.set()
        return self.address


class SwitchWatch:
    """One thread per sentinel, per process and sentinel set: follows the failovers of the
    services of the pools ``add``ed, cutting their connections when the master moves."""

    _watches: ClassVar[dict[int, SwitchWatch]] = {}  # id(manager) -> its watch
    _lock = threading.Lock()

    def __init__(self, manager: Sentinel) -> None:
        self.manager = manager
        self.pid = os.getpid()
        self.pools: list[weakref.ReferenceType[SentinelConnectionPool]] = []
        self.threads: list[threading.Thread] = []
        self.moves: dict[str, Move] = {}  # service -> its failover under way
        self.known: dict[str, Address] = {}  # service -> the master its last +switch-master named
        self.handling = threading.Lock()  # one event at a time, whichever sentinel sent it

    @classmethod
    def add(cls, manager: Sentinel, pool: SentinelConnectionPool) -> SwitchWatch:
        """Watch ``pool`` (a master pool of ``manager``), starting the watch of
        ``manager``'s sentinels if this process has none running."""
        with cls._lock:
            watch = cls._watches.get(id(manager))
            if watch is None or watch.pid != os.getpid():  # a forked child has no thread
                watch = cls._watches[id(manager)] = SwitchWatch(manager)
            watch.pools.append(weakref.ref(pool))
            if not watch.threads:
                for sentinel in manager.sentinels:
                    thread = threading.Thread(target=watch._follow, args=(sentinel,), name="wq-sentinel-watch")
                    thread.daemon = True
                    watch.threads.append(thread)
                    thread.start()
            return watch

    @classmethod
    def master_address(cls, pool: Any) -> Address:
        """Where a connection of ``pool`` (a master pool, or redis-py's proxy of one) opens:
        during a move, the new master once it takes writes (waiting until then); else the
        master the sentinels name."""
        watch = cls._watches.get(id(pool.sentinel_manager))
        move = watch.moves.get(pool.service_name) if watch is not None and watch.pid == os.getpid() else None
        if move is not None and time.monotonic() < move.expires:
            address = move.wait()
            if address is not None:
                return address
        found: Address = pool.get_master_address()
        return found

    def _live_pools(self) -> list[SentinelConnectionPool]:
        """The pools still in use; when none is, the watch ends (under the lock, so that
        an ``add`` meanwhile starts new threads, and the old ones, no longer in
        ``threads``, end: ``_needed``)."""
        with self._lock:
            pools = [pool for pool in (ref() for ref in self.pools) if pool is not None]
            self.pools = [weakref.ref(pool) for pool in pools]
            if not pools:
                self.threads = []
            return pools

    def _pools_of(self, service: str) -> list[SentinelConnectionPool]:
        return [pool for pool in self._live_pools() if pool.service_name == service]

    def _needed(self) -> bool:
        """Whether this thread still has pools to watch."""
        return bool(self._live_pools()) and threading.current_thread() in self.threads

    def _follow(self, sentinel: redis.Redis) -> None:
        """Subscribe on ``sentinel`` again each time it goes away, until no pool is left."""
        while self._needed():
            try:
                self._listen(sentinel)
            except redis.RedisError as exc:  # that sentinel went away: again, after a pause
                log.debug("sentinel watch: %s: %s; subscribing again", sentinel, exc)
                time.sleep(RETRY_SECONDS)
            except _NoPools:
                return

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
            pubsub.subscribe(*CHANNELS)
            with self.handling:
                self._catch_up(client)
            while True:
                message = pubsub.get_message(timeout=HEALTH_SECONDS)
                if not self._needed():
                    raise _NoPools
                if message is not None and message.get("type") == "message":
                    with self.handling:
                        self._event(_text(message["channel"]), _text(message["data"]).split())
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

    def _event(self, channel: str, fields: list[str]) -> None:
        if channel == SWITCH:
            if len(fields) == 5 and fields[4].isdigit():  # service old-ip old-port new-ip new-port
                self._switched(fields[0], (fields[3], int(fields[4])))
            return
        # slave ip:port ip port @ service master-ip master-port (an abort: master service ip port)
        at = fields.index("@") if "@" in fields else -1
        if channel == SELECTED and at == 4 and fields[3].isdigit() and len(fields) > 5:
            self._moving(fields[5], (fields[2], int(fields[3])))
        elif channel == PROMOTED and at == 4 and fields[3].isdigit() and len(fields) > 5:
            self._end_move(fields[5], (fields[2], int(fields[3])))
        elif channel in ABORTS and len(fields) >= 2:
            self._end_move(fields[1], None)

    def _moving(self, service: str, target: Address) -> None:
        """``+selected-slave``: no more writes on the old master; connections wait for the
        replica's promotion."""
        pools = self._pools_of(service)
        if not pools:
            return
        self.moves[service] = Move(target)
        for pool in pools:
            pool.disconnect(inuse_connections=True)
        log.info("sentinel watch: %s is failing over to %s:%d; holding its connections", service, *target)

    def _end_move(self, service: str, address: Address | None) -> None:
        """The move ends: on ``address`` (the promoted replica), or None (aborted: the
        sentinels will say).  Connections that opened on the old master since the cut
        (one that had asked for the address just before it) are cut again first."""
        move = self.moves.get(service)
        if move is None or move.ended.is_set():
            return
        if address is not None and address != move.target:
            address = None
        for pool in self._pools_of(service):
            pool.disconnect(inuse_connections=True)
        move.address = address
        move.expires = time.monotonic() + MOVED_SECONDS
        move.ended.set()
        log.info(
            "sentinel watch: the move of %s ended (%s)", service, f"{address[0]}:{address[1]}" if address else "aborted"
        )

    def _switched(self, service: str, new: Address) -> None:
        """``+switch-master``: the sentinels name ``new`` (each publishes it: handled once)."""
        if self.known.get(service) == new:
            return
        self.known[service] = new
        log.info("sentinel watch: the master of %s moved to %s:%d", service, *new)
        move = self.moves.get(service)
        if move is not None and not move.ended.is_set():
            self._end_move(service, new)
        if move is not None and move.address == new:  # the move put the connections there already
            if self._agree(service, new):  # from now on the sentinels say
                self.moves.pop(service, None)
            return
        self.moves.pop(service, None)
        self._cut(service, new)

    def _cut(self, service: str, new: Address, only_if_elsewhere: bool = False) -> None:
        pools = self._pools_of(service)
        if only_if_elsewhere:
            pools = [pool for pool in pools if pool.master_address not in (None, new)]
        if not pools:
            return
        agreed = self._agree(service, new)
        for pool in pools:
            pool.disconnect(inuse_connections=True)
        log.debug("sentinel watch: cut %d pool(s) of %s (sentinels agree: %s)", len(pools), service, agreed)

    def _agree(self, service: str, new: Address) -> bool:
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
