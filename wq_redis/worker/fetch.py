"""Input files a worker makes itself: a URL fetched (``Task.specify_url``) or a shell
command run (``Task.specify_file_command``), as Work Queue's worker does with curl and
``popen``.

URLs are fetched with the standard library (``urllib``): http and https (proxies from
``http_proxy``/``https_proxy``/``no_proxy``, certificates from the system or
``SSL_CERT_FILE``/``SSL_CERT_DIR``, redirects followed) and file.  Both are bounded: a
file larger than the worker's ``--max-task-bytes`` is refused, and a fetch or command
that fails says why in a ``FetchError`` (an OSError: the task ends as INPUT_MISSING).
"""

from __future__ import annotations

import os
import ssl
import subprocess

from ..protocol.sizes import show_size
from .command import SHELL

CHUNK_BYTES = 1 << 20
SOCKET_TIMEOUT_SECONDS = 60.0  # a server silent this long fails the fetch (not a limit on the whole)
ERROR_TEXT_CHARS = 2000  # of a failed command's output, quoted in the error
URL_SCHEMES = ("http", "https", "file")
_ssl_context: ssl.SSLContext | None = None


class FetchError(OSError):
    """A URL that could not be fetched, or a file command that failed."""


def _context() -> ssl.SSLContext:
    """One default context (the system's certificates, or SSL_CERT_FILE/SSL_CERT_DIR)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


def fetch_url(url: str, destination: str, max_bytes: int) -> None:
    """Write what ``url`` holds to ``destination``; FetchError when it cannot."""
    scheme = url.partition(":")[0].lower()
    if scheme not in URL_SCHEMES:
        raise FetchError(f"cannot fetch {url[:200]!r}: only http, https and file URLs are supported")
    import urllib.error  # (here: urllib's http client and e-mail parser are no part of an idle worker)
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=_context()))
    try:
        with opener.open(url, timeout=SOCKET_TIMEOUT_SECONDS) as response, open(destination, "wb") as out:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise _too_large(url, int(length), max_bytes)
            total = 0
            while chunk := response.read(CHUNK_BYTES):
                total += len(chunk)
                if total > max_bytes:
                    raise _too_large(url, total, max_bytes)
                out.write(chunk)
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        raise FetchError(f"cannot fetch {url[:200]}: HTTP error {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot fetch {url[:200]}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # a reset connection, a malformed URL
        raise FetchError(f"cannot fetch {url[:200]}: {exc}") from None


def _too_large(url: str, size: int, max_bytes: int) -> FetchError:
    return FetchError(
        f"cannot fetch {url[:200]}: it holds more than {show_size(max_bytes)} (at least {show_size(size)}), "
        "the worker's limit per task (wq-redis worker --max-task-bytes)"
    )


def run_file_command(command: str, destination: str, cwd: str, max_bytes: int) -> None:
    """Run ``command`` with each ``%%`` replaced by ``destination``, in the shell, as
    Work Queue does; FetchError (with its output) when it exits non-zero or makes no
    file, or a file over ``max_bytes``."""
    full = command.replace("%%", destination)
    try:
        done = subprocess.run(
            [SHELL, "-c", full, "wq-file-command"],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
    except OSError as exc:
        raise FetchError(f"cannot run file command {command[:200]!r}: {exc}") from None
    said = done.stdout.decode(errors="replace")[-ERROR_TEXT_CHARS:].strip()
    if done.returncode != 0:
        raise FetchError(f"file command {command[:200]!r} failed with exit status {done.returncode}: {said}")
    try:
        size = os.path.getsize(destination)
    except OSError:
        raise FetchError(f"file command {command[:200]!r} succeeded but made no file at %%") from None
    if size > max_bytes:
        raise FetchError(
            f"file command {command[:200]!r} made {show_size(size)}, over the worker's limit of "
            f"{show_size(max_bytes)} per task (wq-redis worker --max-task-bytes)"
        )
