"""Ports and addresses of the metrics servers (worker and exporter), without the server.

Apart from ``metrics_server`` so that parsing ``--metrics-port`` and reporting a port that
cannot be bound need none of the HTTP server's modules (wsgiref, prometheus_client): a
worker started without ``--metrics-port`` never loads them.
"""

from __future__ import annotations

import socket


class PortUnavailable(OSError):
    """Every port of the range is taken (or the address cannot be bound)."""


def parse_port_range(text: str | int) -> range:
    """``"9750"``, ``"9750-9799"`` or ``"0"`` (any free port) as a range of ports to try."""
    first, _, last = str(text).strip().partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"not a port or a port range: {text!r}") from None
    if not (0 <= low <= high <= 65535) or (low == 0 and high != 0):
        raise ValueError(f"not a port or a port range: {text!r}")
    return range(low, high + 1)


def advertised_address(bind: str, port: int, advertise: str | None = None) -> str:
    """``host:port`` other hosts should scrape: ``advertise`` when given, else the bind
    address unless it is a wildcard, else this host's name."""
    host = advertise or bind
    if not advertise and host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    if ":" in host and not host.startswith("["):  # a bare IPv6 address
        host = f"[{host}]"
    return f"{host}:{port}"
