"""What the commands of ``wq-redis`` share: the Redis URL's environment variables, the
option types (port ranges, byte sizes) and the log set-up.

Kept light: ``wq-redis worker`` imports this before anything of the worker, so the
modules behind an option type (the port parser, the size parser) load when an option
of that type is given, not at start.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

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


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
