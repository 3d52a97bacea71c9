"""TLS to Redis: a client's three files (the CA that signed the server's certificate, and
the client's own certificate and key) as the redis-py options ``ssl_ca_certs``,
``ssl_certfile`` and ``ssl_keyfile``.

They travel in the URL's query (``rediss://host:6379/0?ssl_ca_certs=...``), which redis-py
reads as client options: the URL is what every other process gets (local and factory
workers find it in ``WQ_REDIS_URL``; a worker's lane reopens its client from the pool's
options, see ``connection.settings_of``), so one place carries TLS everywhere, and a URL
a user wrote with those parameters already works the same.  Paths are made absolute, as
the processes reading them may start elsewhere; every file is opened here first, so a
missing or unreadable one fails at once with its name rather than at the first connection.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# The command-line options' environment fallbacks, which WorkQueue reads too.
TLS_ENV = {"ca_cert": "WQ_TLS_CA_CERT", "cert": "WQ_TLS_CERT", "key": "WQ_TLS_KEY"}
# Our names -> redis-py's client options (and URL query parameters).
REDIS_PY_OPTION = {"ca_cert": "ssl_ca_certs", "cert": "ssl_certfile", "key": "ssl_keyfile"}
# A URL's scheme -> the one that speaks TLS (redis-py's and ours: sentinel.py, cluster.py).
TLS_SCHEME = {
    "redis": "rediss",
    "redis+sentinel": "rediss+sentinel",
    "sentinel": "rediss+sentinel",
    "redis+cluster": "rediss+cluster",
}
# What each file is, for messages: the command-line option that names it.
OPTION_NAME = {"ca_cert": "--tls-ca-cert", "cert": "--tls-cert", "key": "--tls-key"}


class TlsFileError(ValueError):
    """A TLS file that cannot be used: missing, unreadable, or a key without a certificate."""


def tls_files(
    ca_cert: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The files given, each falling back to its ``WQ_TLS_*`` variable in ``environ`` (when
    given), checked and made absolute; empty when there are none."""
    given = {"ca_cert": ca_cert, "cert": cert, "key": key}
    files: dict[str, str] = {}
    for what, path in given.items():
        path = path or (environ or {}).get(TLS_ENV[what]) or None
        if path is None:
            continue
        path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsFileError(f"TLS file {path} ({OPTION_NAME[what]}): {exc.strerror or exc}") from None
        files[what] = path
    if "key" in files and "cert" not in files:
        raise TlsFileError("--tls-key needs --tls-cert (the client certificate the key belongs to)")
    return files


def with_tls(url: str, files: Mapping[str, str]) -> str:
    """``url`` speaking TLS with ``files`` (see ``tls_files``): ``redis://`` becomes
    ``rediss://``, ``redis+sentinel://`` (and ``sentinel://``) ``rediss+sentinel://``,
    ``redis+cluster://`` ``rediss+cluster://`` (TLS is the scheme's choice in all three:
    the files alone would be read and not used); parameters already in the URL stay
    unless a file replaces them.  ``unix://`` refuses."""
    if not files:
        return url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        raise TlsFileError("TLS options need a TCP Redis URL (redis:// or rediss://), not a unix socket")
    scheme = TLS_SCHEME.get(scheme, scheme)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({REDIS_PY_OPTION[what]: path for what, path in files.items()})
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def handshake_failure(exc: BaseException, url_shown: str) -> str | None:
    """One line saying why TLS with the Redis at ``url_shown`` failed, when ``exc`` (a
    redis-py ConnectionError) came from TLS; None otherwise.  Such a failure does not pass
    by retrying, so callers raise it at once."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    if isinstance(cause, ssl.SSLCertVerificationError):
        hint = "is --tls-ca-cert (WQ_TLS_CA_CERT) the CA that signed the server's certificate?"
    elif isinstance(cause, ssl.SSLEOFError) or "CERTIFICATE_REQUIRED" in str(cause).upper().replace(" ", "_"):
        hint = "the server closed the connection: does it require a client certificate (--tls-cert, --tls-key)?"
    elif "KEY_VALUES_MISMATCH" in str(cause):
        hint = "--tls-key is not the key of --tls-cert"
    elif "WRONG_VERSION_NUMBER" in str(cause) or "wrong version number" in str(cause):
        hint = "the server does not speak TLS on that port: use redis:// without the TLS options"
    else:
        hint = "check --tls-ca-cert, --tls-cert and --tls-key"
    return f"TLS with Redis at {url_shown} failed: {cause.reason or cause} ({hint})"


def tls_url(url: str | None, ca_cert: str | None = None, cert: str | None = None, key: str | None = None) -> str | None:
    """``url`` with the TLS files given, each else its ``WQ_TLS_*`` variable: what
    ``WorkQueue(redis_url, tls_ca_cert=, tls_cert=, tls_key=)`` and ``wq.Factory`` connect to.
    No URL (the embedded server, which serves no TLS) takes no TLS files."""
    if url is None:
        if ca_cert or cert or key:
            raise TlsFileError("tls_ca_cert, tls_cert and tls_key need a redis_url: the embedded Redis serves no TLS")
        return None
    return with_tls(url, tls_files(ca_cert, cert, key, os.environ))
