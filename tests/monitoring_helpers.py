"""Helpers of the monitoring tests: Prometheus' tools, HTTP, exporter processes, parsing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(REPO, "tests")


def require_tool(name: str) -> str:
    """Path of Prometheus' ``name``; skips the test without it (fails under CI, which must
    run these: `make test` installs Debian's prometheus package when root)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed: `make prometheus` as root installs Debian's prometheus package"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples(text: str | bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parsed exposition text: (sample name, sorted labels) -> value."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return parsed.get((name, tuple(sorted(labels.items()))))


def names(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {name for name, _ in parsed}


def family_names(text: str | bytes) -> set[str]:
    """Every metric and sample name of an exposition, empty families included."""
    if isinstance(text, bytes):
        text = text.decode()
    found: set[str] = set()
    for family in text_string_to_metric_families(text):
        found.add(family.name)
        found.update(s.name for s in family.samples)
        if family.type == "counter":
            found.add(family.name + "_total")
        if family.type == "histogram":
            found.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return found


def promtool_check_metrics(text: bytes) -> None:
    checked = subprocess.run(
        [require_tool("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()


class Exporter:
    """A `wq-redis exporter` process on a free loopback port; stop() at teardown."""

    def __init__(self, redis_url: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wq_redis",
                "exporter",
                "--redis-url",
                redis_url,
                "--port",
                "0",
                "--addr",
                "127.0.0.1",
                "--log-level",
                "warning",
                *args,
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the exporter exited before it served"
        info: dict[str, Any] = json.loads(line)
        self.port = int(info["port"])
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
