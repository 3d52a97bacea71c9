"""Redis Cluster: ``redis+cluster://`` URLs (or any node's plain URL, detected), a cluster
client for what spans the cluster, and one client per queue that follows the queue's slot.

A URL names some of the cluster's nodes: ``redis+cluster://[user:password@]host:port[,
host:port...][?options]`` (``rediss+cluster://`` for TLS; options are redis-py's URL
options).  A plain ``redis://`` URL of any node works too: ``connection.open_client``
asks the node (``INFO cluster``) and, when it is a cluster's, opens a cluster client.

The cluster client is redis-py's own ``RedisCluster`` (``QueueCluster`` below only
remembers our connection options): it serves what spans the cluster (queue discovery by
SCAN on every primary, INFO) and knows the slot map.  A queue's own calls go elsewhere:
every key of queue NAME carries the hash tag ``{NAME}`` (keys.py), so they all live in one
slot, on one primary, and our scripts and raw pipelines (pipeline.py) run there as on a
single Redis.  ``queue_client`` gives a plain ``redis.Redis`` whose connections open to
the primary that owns that slot (read from RedisCluster's map: ``get_node_from_key``) and
follow it when it moves:

- a MOVED answer (a failover or a resharding moved the slot; a replica after
  ``CLUSTER FAILOVER``) names the new owner: the connection drops and raises
  ``SlotMoved``, a ConnectionError, which every caller of ours already retries on a fresh
  connection (redis-py's retry policy, then the manager's Reconnect and the worker's
  loops); the fresh connection opens to the new owner.  The calls answered MOVED did not
  run, and the rest of that pipeline is sent again (each of our calls is safe to repeat);
- a connection that cannot open or breaks (a primary killed) marks the map stale: the
  next connection asks the cluster for it again (``nodes_manager.initialize``), so it
  finds the promoted replica as soon as the cluster has elected it;
- ASK, TRYAGAIN (a slot being migrated) and CLUSTERDOWN (a primary down, its replica
  not yet elected) are retried the same way after the retry policy's backoff, on the
  owner the map names, until the migration or election is over.  (An ASK is not
  followed by ASKING on the importing node: our scripts touch several keys of the slot
  at once, which the importing node would answer TRYAGAIN anyway while the slot is split.)

The promoted replica has none of our scripts (SCRIPT LOAD is not replicated): its first
EVALSHA answers NOSCRIPT and the pipeline loads them there (``ScriptPipeline._pipeline``).
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.exceptions import AskError, ClusterDownError, MovedError, RedisClusterException, TryAgainError

from .hostlist import parse_hostlist

SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379
REFRESH_SECONDS = 0.2  # the slot map is asked again at most this often per queue client
# redis-py's connection options a RedisCluster takes (others, ours, are for the queue clients)
_PLAIN = (str, int, float, bool, type(None))


class SlotMoved(redis.ConnectionError):
    """The queue's slot is served elsewhere now (MOVED), or not at the moment (ASK, TRYAGAIN,
    CLUSTERDOWN): the call did not run; retried on a fresh connection."""


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse(url: str) -> dict[str, Any]:
    """The parts of a cluster URL: ``nodes`` [(host, port)] and ``options`` (credentials,
    TLS, redis-py's URL options).  Raises ValueError saying what is wrong."""
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    nodes = parse_hostlist(hostlist, "node", DEFAULT_PORT)
    if not nodes:
        raise ValueError("it names no node (host:port after ://)")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only: leave the path out")
    options: dict[str, Any] = {}
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if has_password:
            options["password"] = unquote(password)
    query = parse_qs(parts.query)
    if query:  # redis-py's own URL options, typed by its parser
        rest = "&".join(f"{name}={value}" for name, values in query.items() for value in values)
        parsed = parse_url(f"redis://localhost/?{rest}")
        options.update({k: v for k, v in parsed.items() if k not in ("host", "port", "db")})
    if parts.scheme.lower() == "rediss+cluster":
        options["ssl"] = True
    return {"nodes": nodes, "options": options}


class QueueCluster(RedisCluster):
    """redis-py's RedisCluster, remembering the connection options (retry policy, command
    packer, timeouts) that the queue clients' connections get (``queue_client``)."""

    slot_options: dict[str, Any]


def connect(url: str, options: dict[str, Any]) -> QueueCluster:
    """A cluster client for ``redis+cluster://`` ``url`` (see the module's doc)."""
    parts = parse(url)
    return _cluster(parts["nodes"], {**options, **parts["options"]})


def from_node(url: str, options: dict[str, Any]) -> QueueCluster:
    """A cluster client from one node's plain ``redis://``/``rediss://`` URL."""
    parsed = parse_url(url)
    host, port = parsed.pop("host", "localhost"), parsed.pop("port", DEFAULT_PORT)
    parsed.pop("db", None)
    if parsed.pop("connection_class", None) is redis.SSLConnection:
        parsed["ssl"] = True
    return _cluster([(host, int(port))], {**options, **parsed})


def _cluster(nodes: list[tuple[str, int]], options: dict[str, Any]) -> QueueCluster:
    """The RedisCluster client; none of ``nodes`` reachable is a ConnectionError (what
    every caller retries), not redis-py's RedisClusterException."""
    cluster_options = {k: v for k, v in options.items() if k not in ("retry_on_error", "health_check_interval")}
    cluster_options.pop("command_packer", None)
    cluster_options.pop("retry", None)  # the cluster client's own retries re-read the slot map
    try:
        client = QueueCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes], **cluster_options)
    except RedisClusterException as exc:
        raise redis.ConnectionError(f"no node of the Redis Cluster answers: {exc}") from None
    client.slot_options = options
    return client


def enabled(client: redis.Redis) -> bool:
    """Whether the server of ``client`` is a cluster node: HELLO without a protocol version
    (Redis 6.2+, Valkey) tells the server's mode without changing the connection, and every
    ACL role of ``wq-redis acl`` may send it (INFO is not granted).  A server that refuses
    it is taken to be a single Redis (``redis+cluster://`` names a cluster then)."""
    try:
        hello = client.execute_command("HELLO")
    except redis.ResponseError:
        return False
    if isinstance(hello, list):  # RESP2: a flat list of names and values
        hello = dict(zip(hello[::2], hello[1::2]))
    mode = hello.get(b"mode", hello.get("mode")) if isinstance(hello, dict) else None
    return mode in (b"cluster", "cluster")


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


class SlotOwner:
    """Where a slot's primary is, shared by the connections of one queue client: the
    cluster client's map, corrected by MOVED answers, asked again after a failed
    connection."""

    def __init__(self, cluster: RedisCluster, key: str) -> None:
        self.cluster = cluster
        self.key = key
        self._lock = threading.Lock()
        self._moved_to: tuple[str, int] | None = None
        self._stale = False
        self._refreshed = 0.0

    def address(self) -> tuple[str, int]:
        with self._lock:
            if self._stale and time.monotonic() - self._refreshed >= REFRESH_SECONDS:
                self._refreshed = time.monotonic()
                try:
                    self.cluster.nodes_manager.initialize()
                    self._stale, self._moved_to = False, None
                except (redis.RedisError, RedisClusterException):
                    pass  # no node answers yet: the connection's own error tells, and is retried
            if self._moved_to is not None:
                return self._moved_to
        node = self.cluster.get_node_from_key(self.key)
        return node.host, int(node.port)

    def moved(self, address: tuple[str, int]) -> None:
        with self._lock:
            self._moved_to = address

    def lost(self) -> None:
        with self._lock:
            self._stale = True


class _SlotMixin:
    """A connection that opens to its slot's owner and turns the cluster's redirections
    into SlotMoved (see the module's doc)."""

    owner: SlotOwner
    host: str
    port: int
    is_connected: bool  # (Connection's property)

    def __init__(self, *args: Any, owner: SlotOwner, **kwargs: Any) -> None:
        self.owner = owner
        super().__init__(*args, **kwargs)

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        """Every socket opening passes here (``connect``, and a retry's reconnect through
        ``send_packed_command``): it opens to the slot's owner as known now."""
        if not self.is_connected:
            self.host, self.port = self.owner.address()
        try:
            super().connect_check_health(  # type: ignore[misc]  # a mixin: Connection is the next class
                check_health=check_health, retry_socket_connect=retry_socket_connect
            )
        except (OSError, redis.ConnectionError):
            self.owner.lost()
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]  # a mixin: Connection is the next class
        except MovedError as exc:
            self.owner.moved((exc.host, exc.port))
            raise SlotMoved(f"slot {exc.slot_id} moved to {exc.host}:{exc.port}") from None
        except (AskError, TryAgainError, ClusterDownError) as exc:
            raise SlotMoved(f"slot of {self.owner.key} not served now: {exc}") from None
        except redis.ResponseError as exc:
            if str(exc).startswith(("READONLY", "LOADING")):  # a demoted primary, a node starting
                self.owner.lost()
                raise SlotMoved(str(exc)) from None
            raise
        except (redis.ConnectionError, redis.TimeoutError):
            self.owner.lost()
            raise


class SlotConnection(_SlotMixin, redis.Connection):
    pass


class SlotSSLConnection(_SlotMixin, redis.SSLConnection):
    pass


def queue_client(client: Any, hash_key: str) -> Any:
    """For a cluster client, a ``redis.Redis`` whose every connection goes to the primary
    that owns ``hash_key``'s slot, as it moves; any other client as it is."""
    if not isinstance(client, QueueCluster):
        return client
    node_pool = client.get_redis_connection(client.get_node_from_key(hash_key)).connection_pool
    options: dict[str, Any] = {k: v for k, v in node_pool.connection_kwargs.items() if isinstance(v, _PLAIN)}
    options.update(client.slot_options)
    for name in ("host", "port", "ssl", "connection_class"):
        options.pop(name, None)
    tls = issubclass(node_pool.connection_class, redis.SSLConnection)
    connection_class = SlotSSLConnection if tls else SlotConnection
    pool = redis.ConnectionPool(connection_class=connection_class, owner=SlotOwner(client, hash_key), **options)
    return redis.Redis(connection_pool=pool)


def settings(client: Any) -> dict[str, Any] | None:
    """What ``connection.settings_of`` gives for a cluster client (None for any other): the
    nodes it knows and its plain connection options; picklable."""
    if not isinstance(client, QueueCluster):
        return None
    nodes = [(node.host, int(node.port)) for node in client.get_nodes()]
    plain = {k: v for k, v in client.slot_options.items() if isinstance(v, _PLAIN)}
    return {"nodes": nodes, "options": plain}


def client_from(found: dict[str, Any], options: dict[str, Any]) -> QueueCluster:
    """A cluster client opened from ``settings``' answer with ``options``."""
    return _cluster([tuple(node) for node in found["nodes"]], {**options, **found["options"]})


def used_memory(client: Any) -> int:
    """Memory the cluster's primaries use together (INFO memory on each)."""
    per_node = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
    return sum(int(info.get("used_memory", 0)) for info in per_node.values())


def address(client: Any) -> str | None:
    """Where a cluster client connects, for messages (never a password); None for any other."""
    if not isinstance(client, RedisCluster):
        return None
    return "redis+cluster://" + ",".join(f"{node.host}:{node.port}" for node in client.get_primaries())
