"""Durability levels: how sure a submit or a completion is to survive before it is
acknowledged.

Redis acknowledges a write once it is in the master's memory; replication and the AOF's
fsync follow asynchronously.  A failover promotes a replica that may not have the last
writes yet, and a crash loses what the AOF had not fsynced (up to a second with
``appendfsync everysec``): Redis' own documents and Jepsen's analysis both say
acknowledged writes can be lost so.  For a queue, a lost completion costs a second run of
the task (its lease expires on the new master); a lost submit is worse: the manager holds
a task that no longer exists anywhere and waits for it.

``none``     acknowledge at once (Redis' default; the fastest).
``replica``  ``WAIT 1 <timeout>``: at least one replica has the write in memory.  A
             failover to that replica keeps it (Sentinel promotes the most up-to-date one).
``aof``      ``WAITAOF 1 0 <timeout>``: the master has fsynced the write to its AOF; a
             crash and restart of that server keeps it (Redis >= 7.2, valkey >= 8.0).

Neither makes Redis strongly consistent: WAIT does not roll back a write no replica took,
and a replica that acknowledged may still lose the election to one that did not.

The WAIT rides in the same pipeline as the calls it guards (``ScriptPipeline._pipeline``
puts it right after the last submit or completion of a round trip): no extra round trip,
only the replica's (or the disk's) latency.

When no replica (or no fsync) acknowledges within WAIT_TIMEOUT_MS, the write stands and
is acknowledged anyway, with a warning once per such stretch (and a line when
acknowledgements come back).  Raising would not undo it (the write is on the master
already), and the caller would submit a second copy; refusing writes without replicas is
Redis' own ``min-replicas-to-write``, which a deployment that prefers it sets on the
server.  Meanwhile each guarded round trip costs up to the timeout: one second keeps a
queue moving (slowly) through a replica's restart, and is far above a healthy replica's
acknowledgement (a millisecond or less on a LAN).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import redis

from .outage import OutageLog

LEVELS = ("none", "replica", "aof")
WAIT_TIMEOUT_MS = 1000
GUARDED = frozenset({"submit", "complete"})  # the script calls a WAIT follows
log = logging.getLogger("wq_redis.protocol.durability")


class DurabilityUnavailable(RuntimeError):
    """The Redis server cannot give the durability asked for (no WAITAOF, no AOF)."""


def durability_from(value: str | None) -> str:
    """The level given, else ``WQ_DURABILITY``, else ``none``; ValueError for another."""
    level = (value or os.environ.get("WQ_DURABILITY") or "none").strip().lower()
    if level not in LEVELS:
        raise ValueError(f"durability must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


class Durability:
    """The WAIT of one level, and what its answers say."""

    def __init__(self, level: str) -> None:
        self.level = level
        if level == "replica":
            self.command: tuple[Any, ...] = ("WAIT", 1, WAIT_TIMEOUT_MS)
            what = "no replica acknowledged"
        else:
            self.command = ("WAITAOF", 1, 0, WAIT_TIMEOUT_MS)
            what = "Redis did not fsync its AOF"
        self._log = OutageLog(
            log,
            down=what + " a write within {ms} ms (durability={level}): writes are acknowledged without it, "
            "each waiting up to {ms} ms, until it does",
            back="writes are acknowledged with durability={level} again after {seconds:.1f} s",
            level=level,
            ms=WAIT_TIMEOUT_MS,
        )

    @classmethod
    def of(cls, level: str) -> Durability | None:
        """The level's WAIT; None for ``none``."""
        level = durability_from(level)
        return None if level == "none" else cls(level)

    def check_server(self, client: redis.Redis) -> None:
        """Raise ``DurabilityUnavailable`` where the server cannot give this level: ``aof``
        on a server without WAITAOF (Redis < 7.2, valkey < 8.0) or without its AOF on.
        One round trip, at construction."""
        if self.level != "aof":
            return
        try:
            client.execute_command("WAITAOF", 0, 0, 1)
        except redis.ResponseError as exc:
            if "unknown command" in str(exc).lower():
                raise DurabilityUnavailable(
                    f"durability='aof' needs WAITAOF (Redis >= 7.2, valkey >= 8.0); this server is "
                    f"{server_version(client)}: use durability='replica' or 'none', or upgrade it"
                ) from None
            raise
        if _aof_off(client):
            raise DurabilityUnavailable(
                "durability='aof' needs the server's AOF: it runs with appendonly no (CONFIG SET appendonly yes)"
            )

    def insert(self, calls: list[Any]) -> int | None:
        """Where the WAIT goes among ``calls``: right after the last guarded one (None:
        no guarded call, no WAIT)."""
        at = None
        for index, call in enumerate(calls):
            if call[0] in GUARDED:
                at = index + 1
        return at

    def check(self, answer: Any) -> None:
        """Warn (once per stretch) when the WAIT's answer says nothing acknowledged."""
        acknowledged = answer[0] if isinstance(answer, list) else answer
        if int(acknowledged) >= 1:
            self._log.succeeded()
        else:
            self._log.failed()


def _aof_off(client: redis.Redis) -> bool:
    """Whether the server's AOF is off (INFO persistence; False where it cannot be read)."""
    try:
        return str(client.info("persistence").get("aof_enabled", 1)) == "0"
    except redis.ResponseError:
        return False


def server_version(client: redis.Redis) -> str:
    info = client.info("server")
    if info.get("valkey_version"):
        return f"valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', '?')}"
