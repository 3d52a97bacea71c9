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

A worker's fast lane (another process) opens its client from ``settings_of``: for a
Sentinel client those are the sentinels' addresses, the service and the master's
connection options, so the lane too follows the master as it moves.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import weakref
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

SCHEMES = ("redis+sentinel", "rediss+sentinel", "sentinel")
DEFAULT_PORT = 26379
# A sentinel that does not answer quickly is skipped for the next (redis-py asks them in
# turn, without retries): a dead one must not hold up finding the master.
SENTINEL_TIMEOUT = 1.0
WATCH_SECONDS = 0.5  # how often each client asks the sentinels whether the master moved
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
    sentinels = [_address(item) for item in hostlist.split(",") if item.strip()]
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


def _address(item: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port``."""
    item = item.strip()
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"sentinel {item!r} has no host")
    if port and not port.isdigit():
        raise ValueError(f"sentinel {item!r}: port {port!r} is not a number")
    return host, int(port) if port else DEFAULT_PORT


def connect(url: str, options: dict[str, Any]) -> redis.Redis:
    """A client of the master that the sentinels of ``url`` name, with ``options`` (those
    of every client of ours) for its connections."""
    parts = parse(url)
    return _master_client(parts["sentinels"], parts["service"], parts["sentinel"], {**options, **parts["master"]})


def _master_client(
    sentinels: list[tuple[str, int]], service: str, sentinel_options: dict[str, Any], options: dict[str, Any]
) -> redis.Redis:
    """``options["ssl"]``: TLS to the master (SentinelConnectionPool picks its connection
    class by it)."""
    manager = Sentinel(
        sentinels,
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            "socket_keepalive": True,
            **sentinel_options,
        },
    )
    client = manager.master_for(service, **options)
    MasterWatch.start(client.connection_pool)
    return client


class MasterWatch:
    """Asks the sentinels every WATCH_SECONDS which server is the master, and cuts every
    connection of ``pool`` to another.

    redis-py asks only when a connection opens, and a connection to the old master learns
    of the failover only when that server refuses a write.  After ``SENTINEL FAILOVER``
    the old master goes on taking writes until the sentinels reconfigure it, several
    seconds later: claims and completions written there meanwhile are lost with it (the
    issue measured 850 tasks run twice).  Cut at once, the calls in flight fail as on a
    dropped connection (the owner's thread sees ConnectionError and retries on a fresh
    connection, which asks the sentinels): only the calls of the last WATCH_SECONDS go to
    the old master.  Idle connections are closed by redis-py itself
    (``get_master_address``); busy ones (a worker's wait for work, a lane's own
    connection) have their socket shut down, never closed from this thread, so that their
    owner's read ends with an error it handles.

    One SENTINEL call per WATCH_SECONDS per process, on its own connection."""

    @classmethod
    def start(cls, pool: SentinelConnectionPool) -> None:
        ref = weakref.ref(pool)
        threading.Thread(target=cls._watch, args=(ref,), name="wq-sentinel-watch", daemon=True).start()

    @staticmethod
    def _watch(ref: weakref.ReferenceType[SentinelConnectionPool]) -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            pool = ref()
            if pool is None:
                return
            try:
                known = pool.proxy.master_address
                if known is None:  # no connection opened yet
                    continue
                found = pool.get_master_address()  # closes the idle connections when it moved
            except redis.RedisError:
                continue  # no sentinel answers: the connections' own errors tell
            if found != known:
                for conn in list(pool._get_in_use_connections()):
                    if (conn.host, conn.port) != found:
                        sock = getattr(conn, "_sock", None)
                        if sock is not None:
                            try:
                                sock.shutdown(socket.SHUT_RDWR)
                            except OSError:
                                pass
            del pool


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
