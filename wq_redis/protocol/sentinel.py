"""Redis Sentinel: ``redis+sentinel://`` URLs, and clients that find the master through
the sentinels.

A URL names the sentinels and the service they watch, not the master:
``redis+sentinel://[user:password@]host:port[,host:port...]/SERVICE[/DB][?options]``
(``sentinel://`` is the same; ``rediss+sentinel://`` speaks TLS to the master and the
sentinels).  The user name and password are the master's; the sentinels' own, where they
need one, are the options ``sentinel_username`` and ``sentinel_password``; every other
option is one of redis-py's URL options for the master's connections (``socket_timeout``,
``ssl_ca_certs``...).  A host without a port is on 26379, Sentinel's.

The client is redis-py's own (``Sentinel.master_for``): each connection asks the
sentinels for the master's address when it opens, and one that meets a demoted master
(its writes refused READONLY, its blocked calls UNBLOCKED) drops itself and raises
ConnectionError, which every caller of ours already retries on a fresh connection
(protocol/pipeline.py, client/reconnect.py, the worker's loops); the fresh one asks the
sentinels again.  So a failover costs the calls in flight a retry, never a restart.  The
scripts are not on the promoted master (SCRIPT LOAD is not replicated): its first
EVALSHA answers NOSCRIPT, and the pipeline loads them again (``ScriptPipeline._pipeline``).
Connections do not wait for the old master to refuse them: the sentinels' failover events
cut them as soon as a failover starts and hold new ones until the replica is promoted
(sentinel_watch.py, one subscription per sentinel and process).

A worker's fast lane (another process) opens its client from ``settings_of``: for a
Sentinel client those are the sentinels' addresses, the service and the master's
connection options, so the lane too follows the master as it moves.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

from .hostlist import parse_hostlist
from .sentinel_watch import SwitchWatch

SCHEMES = ("redis+sentinel", "rediss+sentinel", "sentinel")
DEFAULT_PORT = 26379
# A sentinel that does not answer quickly is skipped for the next (redis-py asks them in
# turn, without retries): a dead one must not hold up finding the master.
SENTINEL_TIMEOUT = 1.0
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def hide_password(url: str) -> str:
    """``url`` with its ``sentinel_password`` option's value hidden (the master's, in the
    user info, ``connection.safe_url`` hides)."""
    return re.sub(r"([?&]sentinel_password=)[^&#]*", r"\1***", url)


def parse(url: str) -> dict[str, Any]:
    """The parts of a Sentinel URL: ``sentinels`` [(host, port)], ``service``, ``master``
    (the master's connection options: credentials, db, URL options) and ``sentinel`` (the
    sentinels' connection options).  Raises ValueError saying what is missing."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    sentinels = parse_hostlist(hostlist, "sentinel", DEFAULT_PORT)
    if not sentinels:
        raise ValueError("it names no sentinel (host:port after ://)")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("its path must be /SERVICE or /SERVICE/DB: the name the sentinels know the master by")
    master: dict[str, Any] = {}
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"database {path[1]!r} is not a number")
        master["db"] = int(path[1])
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if user:
            master["username"] = unquote(user)
        if has_password:
            master["password"] = unquote(password)
    query = parse_qs(parts.query)
    sentinel: dict[str, Any] = {}
    for name in SENTINEL_OPTIONS:
        if name in query:
            sentinel[name.removeprefix("sentinel_")] = query.pop(name)[0]
    if query:  # redis-py's own URL options, typed by its parser, for the master's connections
        rest = "&".join(f"{name}={value}" for name, values in query.items() for value in values)
        options = parse_url(f"redis://localhost/?{rest}")
        master.update({k: v for k, v in options.items() if k not in ("host", "port", "db")})
    if scheme == "rediss+sentinel":
        master["ssl"] = True
        sentinel["ssl"] = True
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            if name in master:
                sentinel[name] = master[name]
    return {"sentinels": sentinels, "service": path[0], "master": master, "sentinel": sentinel}


def connect(url: str, options: dict[str, Any]) -> redis.Redis:
    """A client of the master that the sentinels of ``url`` name, with ``options`` (those
    of every client of ours) for its connections."""
    parts = parse(url)
    return _master_client(parts["sentinels"], parts["service"], parts["sentinel"], {**options, **parts["master"]})


def _master_client(
    sentinels: list[tuple[str, int]], service: str, sentinel_options: dict[str, Any], options: dict[str, Any]
) -> redis.Redis:
    """``options["ssl"]``: TLS to the master (SentinelConnectionPool picks its connection
    class by it).  The process's clients of the same sentinels share one ``Sentinel``
    (its connections to the sentinels) and one watch of their ``+switch-master`` events
    (sentinel_watch.py)."""
    manager = _manager(sentinels, sentinel_options)
    tls = bool(options.pop("ssl", False))
    connection_class = FollowingSSLConnection if tls else FollowingConnection
    client = manager.master_for(service, connection_class=connection_class, **options)
    SwitchWatch.add(manager, client.connection_pool)
    return client


class FollowingConnection(SentinelManagedConnection):
    """A connection of a master pool that asks the sentinels for the master every time
    it opens a socket.

    redis-py's own asks only in ``connect``, which its pool calls; a connection dropped
    in the middle of a command (a failover cut it: sentinel_watch.py; the old master
    refused a write READONLY) is reopened by the client's retry through
    ``send_packed_command`` -> ``connect_check_health``, on the host and port it had:
    the old master, which takes writes until the sentinels demote it, and they are lost
    with it.  So the address is asked here, where every opening passes (of the failover
    watch while a failover is under way, else of the sentinels), and ``connect`` does not
    ask a second time."""

    def connect(self) -> None:
        if not self.connection_pool.is_master:
            return super().connect()
        self.retry.call_with_retry(
            lambda: self.connect_check_health(
                check_health=self.connection_pool.check_connection, retry_socket_connect=False
            ),
            lambda _error: None,
        )

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.connection_pool.is_master and not self.is_connected:
            self.host, self.port = SwitchWatch.master_address(self.connection_pool)
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)


class FollowingSSLConnection(FollowingConnection, SentinelManagedSSLConnection):
    pass


_managers: dict[tuple[Any, ...], Sentinel] = {}
_managers_lock = threading.Lock()


def _manager(sentinels: list[tuple[str, int]], sentinel_options: dict[str, Any]) -> Sentinel:
    """This process's ``Sentinel`` for those sentinels and options (all plain values)."""
    key = (os.getpid(), tuple(sentinels), tuple(sorted((k, repr(v)) for k, v in sentinel_options.items())))
    with _managers_lock:
        manager = _managers.get(key)
        if manager is None:
            manager = _managers[key] = Sentinel(
                sentinels,
                sentinel_kwargs={
                    "socket_timeout": SENTINEL_TIMEOUT,
                    "socket_connect_timeout": SENTINEL_TIMEOUT,
                    "socket_keepalive": True,
                    **sentinel_options,
                },
            )
        return manager


def _is_tls(connection_class: type) -> bool:
    return issubclass(connection_class, redis.SSLConnection)


def settings(pool: redis.ConnectionPool) -> dict[str, Any] | None:
    """What ``connection.settings_of`` adds for a Sentinel client's pool (None for any
    other): the sentinels' addresses and options, the service, whether the master speaks
    TLS; all picklable.  The master's own options are the pool's, as for any client."""
    if not isinstance(pool, SentinelConnectionPool):
        return None
    clients = pool.sentinel_manager.sentinels
    kwargs = [client.connection_pool.connection_kwargs for client in clients]
    options = {
        name: kwargs[0][name]
        for name in ("username", "password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
        if kwargs and kwargs[0].get(name) is not None
    }
    if clients and _is_tls(clients[0].connection_pool.connection_class):
        options["ssl"] = True
    return {
        "sentinels": [(k["host"], k["port"]) for k in kwargs],
        "service": pool.service_name,
        "options": options,
        "ssl": _is_tls(pool.connection_class),
    }


def client_from(found: dict[str, Any], options: dict[str, Any]) -> redis.Redis:
    """A client opened from ``settings``' answer with the master's ``options``."""
    if found["ssl"]:
        options = {**options, "ssl": True}
    return _master_client(found["sentinels"], found["service"], found["options"], options)


def address(pool: redis.ConnectionPool) -> str | None:
    """Where a Sentinel client connects, for messages (never a password); None for any
    other client."""
    if not isinstance(pool, SentinelConnectionPool):
        return None
    hosts = ",".join(
        f"{c.connection_pool.connection_kwargs['host']}:{c.connection_pool.connection_kwargs['port']}"
        for c in pool.sentinel_manager.sentinels
    )
    return f"redis+sentinel://{hosts}/{pool.service_name}/{pool.connection_kwargs.get('db', 0)}"
