"""Connecting to Redis: which URL, the client options of every connection (retry policy,
timeouts, our command packer), and a connection check that fails clearly."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from . import cluster, sentinel
from .packer import CommandPacker
from .tls import handshake_failure

URL_SCHEMES = ("redis", "rediss", "unix", *sentinel.SCHEMES, *cluster.SCHEMES)
log = logging.getLogger("wq_redis.protocol.connection")
# The longest any of our blocking calls (BLPOP) waits in Redis: a socket read that times out
# first would be retried by redis-py, and the wait would never end (see socket_timeout).
LONGEST_WAIT_SECONDS = 30.0


def connect(url: str, **kwargs: Any) -> redis.Redis:
    """A binary-safe client that reconnects with exponential backoff on dropped connections
    (for a Sentinel URL, to the master the sentinels name: protocol/sentinel.py)."""
    if sentinel.is_sentinel_url(url):
        return sentinel.connect(url, {**connect_options(), **kwargs})
    if cluster.is_cluster_url(url):  # a RedisCluster: the same commands (protocol/cluster.py)
        return cast("redis.Redis", cluster.connect(url, {**connect_options(), **kwargs}))
    return redis.Redis.from_url(url, **{**connect_options(), **kwargs})


def connect_options() -> dict[str, Any]:
    """The client options of every connection we open (see ``connect``)."""
    return dict(
        command_packer=CommandPacker(),
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        # longer than any blocking call we make (LONGEST_WAIT_SECONDS), short enough that
        # a partition is noticed instead of hanging until TCP gives up
        socket_timeout=LONGEST_WAIT_SECONDS + 30,
        socket_connect_timeout=10,
        socket_keepalive=True,
        health_check_interval=30,
    )


class RedisUnavailable(ConnectionError):
    """Redis could not be reached or refused our credentials."""


def resolve_url(redis_url: str | None) -> str | None:
    """The URL given, else ``WQ_REDIS_URL``, else ``REDIS_URL``, else None (embedded)."""
    return redis_url or os.environ.get("WQ_REDIS_URL") or os.environ.get("REDIS_URL") or None


def check_url(url: str) -> None:
    """Raise ValueError, in one line that shows how to write it, for a URL redis-py
    cannot parse (``localhost:6379`` has no scheme; redis-py's own error is a traceback
    deep in its connection pool)."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in URL_SCHEMES:
        shown = safe_url(f"redis://{url}").removeprefix("redis://")
        raise ValueError(
            f"Redis URL {shown!r} has no redis:// scheme: write redis://{shown} "
            "(rediss:// for TLS, unix:///path/to/redis.sock for a socket, "
            "redis+sentinel://host:port[,host:port...]/SERVICE for Sentinel, "
            "redis+cluster://host:port[,host:port...] for Redis Cluster)"
        )
    try:
        if sentinel.is_sentinel_url(url):
            sentinel.parse(url)
        elif cluster.is_cluster_url(url):
            cluster.parse(url)
        else:
            redis.ConnectionPool.from_url(url)
    except ValueError as exc:
        raise ValueError(f"invalid Redis URL {safe_url(url)}: {exc}") from None


def open_client(url: str, wait_seconds: float = 2.0, **client_options: Any) -> redis.Redis:
    """Connect and check at once, so a wrong password or host fails here, clearly.

    Refused or dropped connections are retried for ``wait_seconds`` (a Redis that is still
    starting, a connection cut at the wrong moment); wrong credentials fail at once.  The
    check uses a client without redis-py's own retries: it counts an authentication
    failure as a connection error and would retry it with backoff for a long while.
    ``client_options`` override those of the client returned (see ``connect``).
    """
    check_url(url)
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    told = False
    while True:
        probe = connect(url, retry=Retry(NoBackoff(), 0), retry_on_error=[], socket_connect_timeout=5)
        try:
            probe.ping()
            if not cluster.is_cluster(probe) and cluster.enabled(probe):  # any node's URL: the cluster
                return cast("redis.Redis", cluster.from_node(url, {**connect_options(), **client_options}))
            return connect(url, **client_options)
        except redis.AuthenticationError as exc:
            raise RedisUnavailable(f"Redis at {safe_url(url)} refused the credentials: {exc}") from None
        except redis.ResponseError as exc:
            message = str(exc)
            if "NOAUTH" in message or "WRONGPASS" in message:
                raise RedisUnavailable(f"Redis at {safe_url(url)} needs a password: {exc}") from None
            if "DENIED" in message:
                raise RedisUnavailable(
                    f"Redis at {safe_url(url)} refuses remote clients (protected mode): "
                    "give it a password or bind it to this host only"
                ) from None
            raise
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            tls_failure = handshake_failure(exc, safe_url(url))  # retrying would not help
            if tls_failure:
                raise RedisUnavailable(tls_failure) from None
            if time.monotonic() + delay > deadline:
                raise RedisUnavailable(f"cannot reach Redis at {safe_url(url)}: {exc}") from None
            if not told:  # once, not per retry
                log.info("connecting to %s ... (%s; retrying for up to %.0f s)", _display(url), exc, wait_seconds)
                told = True
        finally:
            probe.close()
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _display(url: str) -> str:
    """The URL for a log line: ``safe_url``'s, without even the placeholder of the user name
    and password (said to be hidden if there was one)."""
    if "@" not in url:
        return url
    scheme, _, rest = safe_url(url).partition("://***@")
    return f"{scheme}://{rest} (password hidden)"


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    if sentinel.is_sentinel_url(url):
        url = sentinel.hide_password(url)
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def settings_of(client: redis.Redis) -> dict[str, Any]:
    """What another process needs to open a client like ``client`` (address, credentials,
    TLS options: the plain values of its connection pool), picklable."""
    if cluster.is_cluster(client):
        return {"kwargs": {}, "cluster": cluster.settings(client)}
    pool = client.connection_pool
    plain = {
        name: value
        for name, value in pool.connection_kwargs.items()
        if isinstance(value, (str, int, float, bool, type(None))) and not name.startswith("orig_")
    }
    return {"connection_class": pool.connection_class, "kwargs": plain, "sentinel": sentinel.settings(pool)}


def client_from(settings: dict[str, Any], client_name: str | None = None) -> redis.Redis:
    """A client opened with ``settings_of`` another (our retries and command packer),
    named ``client_name`` in Redis' CLIENT LIST when given."""
    options = {**connect_options(), **settings["kwargs"]}
    if client_name:
        options["client_name"] = client_name
    if settings.get("cluster"):
        client: Any = cluster.client_from(settings["cluster"], options)
    elif settings.get("sentinel"):  # the lane finds the master through the sentinels too
        client = sentinel.client_from(settings["sentinel"], options)
    else:
        client = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=settings["connection_class"], **options)
        )
    if client_name:
        try:
            client.ping()  # the name is set as each connection opens: try it once now
        except redis.ResponseError as exc:  # an ACL user without +client|setname: the name is a nicety
            log.info("connecting without the client name %r (%s)", client_name, exc)
            client.close()
            return client_from(settings)
        except redis.RedisError:
            pass  # Redis away: the caller's own calls retry
    return client
