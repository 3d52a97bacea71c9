"""The small HTTP server behind ``/metrics``, ``/healthz`` and ``/sd`` (worker and exporter).

Built on prometheus_client's WSGI app, with a few more routes and a port *range*: several
workers on one host each take the first free port of ``--metrics-port 9750-9799`` (or any
free port with ``0``) instead of colliding on one fixed port.  Parsing a port range and
``PortUnavailable`` live in ``ports``, which loads none of this.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import TCPServer, ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app

from .ports import PortUnavailable, advertised_address

SERVER_JOIN_SECONDS = 5.0  # close waits this long for the serving thread (shutdown has stopped it already)

# A route answers (HTTP status, content type, body).
Route = Callable[[], tuple[int, str, bytes]]


def json_route(payload: Callable[[], Any]) -> Route:
    return lambda: (200, "application/json", json.dumps(payload()).encode())


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would flood the worker's log


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for our fully qualified name (getfqdn), which
        # can stall for seconds on a host without a resolver; the bare address will do.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


@dataclass
class MetricsServer:
    """A running server: its bound port, the address to advertise, and ``close()``."""

    httpd: WSGIServer
    thread: threading.Thread
    port: int
    address: str

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(SERVER_JOIN_SECONDS)


def _app(registry: CollectorRegistry, routes: dict[str, Route]) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in ("/metrics", "/"):
            return metrics(environ, start_response)
        route = routes.get(path.rstrip("/") or "/")
        if route is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found; try /metrics\n"]
        status, content_type, body = route()
        reason = {200: "OK", 503: "Service Unavailable"}.get(status, "")
        start_response(f"{status} {reason}", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve(
    registry: CollectorRegistry,
    bind: str,
    ports: range,
    routes: dict[str, Route],
    advertise: str | None = None,
    name: str = "metrics",
) -> MetricsServer:
    """Serve ``/metrics`` of ``registry`` plus ``routes`` on the first free port of ``ports``."""
    try:
        family6 = ipaddress.ip_address(bind.strip("[]")).version == 6
    except ValueError:  # a host name
        family6 = False
    server_class = _Server6 if family6 else _Server
    app = _app(registry, routes)
    last_error: OSError | None = None
    for port in ports:
        try:
            httpd = server_class((bind.strip("[]"), port), _QuietHandler)
        except OSError as exc:  # in use: try the next port of the range
            last_error = exc
            continue
        httpd.set_app(app)
        thread = threading.Thread(target=httpd.serve_forever, name=f"{name}-http", daemon=True)
        thread.start()
        bound = httpd.server_address[1]
        return MetricsServer(httpd, thread, bound, advertised_address(bind, bound, advertise))
    raise PortUnavailable(f"no free port in {ports.start}-{ports.stop - 1} on {bind}: {last_error}")
