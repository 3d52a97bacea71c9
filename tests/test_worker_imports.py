"""What an idle ``wq-redis worker`` has loaded: only what a worker uses.

A cluster runs thousands of workers, most of them idle most of the time, so every module
their main process loads costs memory thousands of times over.  The worker is started as
users start it (``python -m wq_redis worker ...``, the console script's entry), inside a
probe that lets it run until it is idle (registered, and a connection of it blocked on
Redis waiting for work), writes the process's ``sys.modules`` to a file, and stops it
with SIGTERM as an operator would (it must then exit 0).  Nothing in the worker knows it
is being watched.

Loaded only where they are used: prometheus_client, psutil and the HTTP server with
``--metrics-port``; cloudpickle in the manager (the worker's main process unpickles no
function: its warm child does); rich by ``wq-redis status``; urllib's HTTP client for a
URL input; tarfile for a directory; pynvml where NVIDIA's library is installed and GPUs
are to be detected.  The client API (``wq_redis.client``), the embedded Redis and the other
commands' modules are never part of a worker.
"""

from __future__ import annotations

import ctypes
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

import wq_redis
from wq_redis.embedded.server import RedisServer
from wq_redis.protocol.keys import QueueKeys

QUEUE = "imports"
IDLE_SECONDS = 60.0  # the probe gives up (and the test fails) if the worker is not idle by then

# Runs in the worker's own process, before the worker: argv is OUT URL WORKERS_KEY -- the
# worker's command line.  It imports only what a worker imports anyway (redis-py, json,
# threading; runpy is how ``python -m`` starts every module).
PROBE = """
import json, os, runpy, signal, sys, threading, time
import redis

out, url, workers_key = sys.argv[1:4]
sys.argv = ["wq-redis", *sys.argv[5:]]

def idle(client):
    if not client.zcard(workers_key):
        return False
    # this Redis serves only this test: a blocked client is the worker waiting for work
    return any("b" in c["flags"] for c in client.client_list())

def watch():
    client = redis.Redis.from_url(url, decode_responses=True)
    deadline = time.monotonic() + float(os.environ["PROBE_IDLE_SECONDS"])
    seen = False
    while not seen and time.monotonic() < deadline:
        seen = idle(client)
        time.sleep(0.05)
    with open(out, "w") as f:
        json.dump({"idle": seen, "modules": sorted(sys.modules)}, f)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=watch, daemon=True).start()
runpy.run_module("wq_redis", run_name="__main__", alter_sys=True)
"""

# Never in an idle worker without --metrics-port (modules and the packages under them).
NEVER = (
    "prometheus_client",
    "psutil",
    "cloudpickle",
    "rich",
    "wsgiref",
    "http.server",
    "urllib.request",
    "tarfile",
    "wq_redis.client",
    "wq_redis.embedded",
    "wq_redis.vine",
    "wq_redis.worker.metrics",
    "wq_redis.worker.metrics_server",
    "wq_redis.protocol.report",
    "wq_redis.protocol.views",
    "wq_redis.ops.exporter",
)


def nvml_installed() -> bool:
    """Whether NVIDIA's management library loads on this host (then a worker detecting
    its GPUs rightly imports pynvml)."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def quiet_redis() -> Iterator[RedisServer]:
    """A Redis of this module's own: no other client can be blocked on it."""
    server = RedisServer().start()
    yield server
    server.stop()


def idle_modules(server: RedisServer, tmp_path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    command = [
        sys.executable,
        "-c",
        PROBE,
        str(out),
        server.url,
        QueueKeys(QUEUE).workers,
        "--",
        "worker",
        "--redis-url",
        server.url,
        "--queue",
        QUEUE,
        "--log-level",
        "warning",
        *args,
    ]
    # the wq_redis this test imported, whatever the directory (run from tmp_path: ``-c``
    # puts the working directory first on sys.path)
    here = str(pathlib.Path(wq_redis.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
        "PROBE_IDLE_SECONDS": str(IDLE_SECONDS),
    }
    done = subprocess.run(
        command, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(out.read_text())
    assert found["idle"], f"the worker was not idle within {IDLE_SECONDS} s: {done.stderr[-3000:]}"
    modules = set(found["modules"])
    assert {"wq_redis.worker.loop", "wq_redis.protocol.store", "redis"} <= modules  # a worker ran here
    return modules


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_an_idle_one_core_worker_loads_only_what_a_worker_uses(quiet_redis, tmp_path):
    """The usual worker (one core: its warm child waits for work in the fast lane)."""
    modules = idle_modules(quiet_redis, tmp_path, "--cores", "1")
    assert loaded(modules, NEVER) == []
    if not nvml_installed():  # no NVIDIA library: GPU detection never imports pynvml
        assert "pynvml" not in modules


def test_a_worker_declaring_no_gpus_never_asks_nvml(quiet_redis, tmp_path):
    """Two cores (the main process blocks on Redis itself) and --gpus 0: nothing of NVML,
    on any host."""
    modules = idle_modules(quiet_redis, tmp_path, "--cores", "2", "--gpus", "0")
    assert loaded(modules, (*NEVER, "pynvml")) == []


def test_metrics_load_their_libraries_when_asked_for(quiet_redis, tmp_path):
    """--metrics-port brings prometheus_client, psutil and the HTTP server: the probe sees
    what a worker loads after it starts, so the tests above would see them too."""
    modules = idle_modules(quiet_redis, tmp_path, "--cores", "1", "--metrics-port", "0", "--metrics-addr", "127.0.0.1")
    assert {"prometheus_client", "psutil", "wq_redis.worker.metrics", "wq_redis.worker.metrics_server"} <= modules
    assert loaded(modules, ("rich", "cloudpickle", "wq_redis.client", "wq_redis.embedded")) == []
