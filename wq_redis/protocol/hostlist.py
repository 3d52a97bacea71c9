"""The host lists of multi-host Redis URLs (``redis+sentinel://a:26379,b/...``,
``redis+cluster://a:6379,b:6380``): one parser for both kinds."""

from __future__ import annotations


def parse_hostlist(hostlist: str, what: str, default_port: int) -> list[tuple[str, int]]:
    """``host``, ``host:port`` or ``[v6]:port`` items, comma-separated (empty ones
    skipped); ``what`` names an item in errors ("node", "sentinel")."""
    return [_address(item, what, default_port) for item in hostlist.split(",") if item.strip()]


def _address(item: str, what: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"{what} {item!r} has no host")
    if port and not port.isdigit():
        raise ValueError(f"{what} {item!r}: port {port!r} is not a number")
    return host, int(port) if port else default_port
