"""What the commands of ``wq-redis`` share: the Redis URL's environment variables, its
TLS options, the options a worker is told (``worker`` and ``factory``), the option types
(port ranges, byte sizes) and the log set-up.

Kept light: ``wq-redis worker`` imports this before anything of the worker, so the
modules behind an option type (the port parser, the size parser) load when an option
of that type is given, not at start.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

Command = TypeVar("Command", bound=Callable[..., Any])

# Where every command looks for the Redis URL when --redis-url is not given, in this order.
REDIS_URL_ENV = ["WQ_REDIS_URL", "REDIS_URL"]
LOG_LEVELS = ["debug", "info", "warning", "error"]


class PortRange(click.ParamType):
    """``9750``, ``9750-9799`` (the first free one), or ``0`` (any free port)."""

    name = "port[-port]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> range:
        if isinstance(value, range):
            return value
        from ..worker.ports import parse_port_range

        try:
            return parse_port_range(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class ByteSize(click.ParamType):
    """A size in bytes: ``536870912``, ``512M``, ``512MiB``, ``2G`` (powers of 1024)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from ..protocol.sizes import parse_size

        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


# The --log-level option of the long-running commands (worker, exporter).
log_level_option = click.option(
    "--log-level",
    envvar="WQ_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
)


def option_group(*options: Callable[[Command], Command]) -> Callable[[Command], Command]:
    """One decorator of several click options, listed by ``--help`` in the order given."""

    def apply(command: Command) -> Command:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


# -- what a worker is told: `wq-redis worker` reads it, `wq-redis factory` passes it on to the
# workers it starts.  One declaration of each option's names, environment variable, type and
# default, so that the two commands cannot drift apart; the help texts are each command's
# own (the factory's speak of the workers it starts).  Two groups, because the factory
# lists its own options between them.
def queue_options(redis_url: str, queue: str) -> Callable[[Command], Command]:
    """``--redis-url`` (required; env WQ_REDIS_URL, then REDIS_URL) and ``--queue``/``-M``."""
    return option_group(
        click.option("--redis-url", "--redis", envvar=REDIS_URL_ENV, required=True, help=redis_url),
        click.option("--queue", "-M", envvar="WQ_QUEUE", default="default", show_default=True, help=queue),
    )


def resource_options(cores: str, memory: str, disk: str, gpus: str, tags: str) -> Callable[[Command], Command]:
    """A worker's resources and tags: ``--cores``, ``--memory``, ``--disk``, ``--gpus``, ``--tags``."""
    return option_group(
        click.option("--cores", envvar="WQ_CORES", type=click.IntRange(min=1), help=cores),
        click.option("--memory", envvar="WQ_MEMORY", type=click.IntRange(min=0), help=memory),
        click.option("--disk", envvar="WQ_DISK", type=click.IntRange(min=0), help=disk),
        click.option("--gpus", envvar="WQ_GPUS", type=click.IntRange(min=0), help=gpus),
        click.option("--tags", envvar="WQ_TAGS", default="", help=tags),
    )


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def tls_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--tls-ca-cert``, ``--tls-cert`` and ``--tls-key`` (env ``WQ_TLS_*``) for a command
    with a ``redis_url`` parameter: the command gets the URL with them (``rediss://...``,
    see protocol/tls.py), so whatever it starts (workers, lanes) inherits them; a missing
    or unreadable file is a usage error naming it."""

    @functools.wraps(command)
    def with_tls_url(
        *args: Any, tls_ca_cert: str | None, tls_cert: str | None, tls_key: str | None, **kwargs: Any
    ) -> Any:
        from ..protocol.tls import TlsFileError, tls_files, with_tls

        try:
            files = tls_files(tls_ca_cert, tls_cert, tls_key)
            if kwargs["redis_url"] is not None:  # optional for some (acl without --apply)
                kwargs["redis_url"] = with_tls(kwargs["redis_url"], files)
        except TlsFileError as exc:
            raise click.UsageError(str(exc)) from None
        return command(*args, **kwargs)

    path = click.Path(dir_okay=False)
    decorated = click.option(
        "--tls-key", envvar="WQ_TLS_KEY", type=path, help="Private key of --tls-cert (env WQ_TLS_KEY)."
    )(with_tls_url)
    decorated = click.option(
        "--tls-cert",
        envvar="WQ_TLS_CERT",
        type=path,
        help="Client certificate for a Redis that requires one (env WQ_TLS_CERT; with --tls-key).",
    )(decorated)
    return click.option(
        "--tls-ca-cert",
        envvar="WQ_TLS_CA_CERT",
        type=path,
        help="CA certificate that signed the Redis server's: speak TLS (rediss://) and check the "
        "server against it (env WQ_TLS_CA_CERT).",
    )(decorated)
