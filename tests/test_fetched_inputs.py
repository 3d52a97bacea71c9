"""Inputs the worker makes itself: ``specify_url`` (http, https, file) and
``specify_file_command`` (``%%`` is the file's path), cached by URL or command with
``cache=True``; a failure ends the task as INPUT_MISSING without running it."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import drain
from everyday_tasks import read_input

import wq_redis as wq

FILES = {"/data.txt": b"served over http\n", "/big.bin": b"x" * 50_000}


class _Handler(BaseHTTPRequestHandler):
    hits: Counter[str]

    def do_GET(self) -> None:  # http.server calls it by this name
        self.hits[self.path] += 1
        body = FILES.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Server:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        handler = type("Handler", (_Handler,), {"hits": self.hits})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server(monkeypatch) -> Iterator[Server]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)  # the workers inherit the environment: no proxy for loopback
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    served = Server()
    served.thread.start()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def _failed_before_running(task: wq.Task) -> None:
    assert task.result == wq.WORK_QUEUE_RESULT_INPUT_MISSING == 1
    assert task.return_status == 1  # Work Queue's worker: a task whose sandbox cannot be set up
    assert task.output == ""  # the command never ran


def test_a_url_is_fetched_into_the_sandbox(queue, workers, server):
    task = wq.Task("cat data.txt; stat -c %a data.txt")
    task.specify_url(server.url("/data.txt"), "data.txt")
    python = wq.PythonTask(read_input, "fetched.txt")
    python.specify_url(server.url("/data.txt"), "fetched.txt", cache=True)
    queue.submit(task)
    queue.submit(python)
    workers.start("--cores", "1")
    done = {t.id: t for t in drain(queue, 2)}
    assert (done[task.id].result, done[task.id].output) == (0, "served over http\n755\n")
    assert done[python.id].output == "served over http\n"


def test_a_missing_url_fails_the_task_as_input_missing(queue, workers, server):
    task = wq.Task("echo ran")
    task.specify_url(server.url("/nothing-here"), "data.txt")
    queue.submit(task)
    workers.start("--cores", "1")
    (done,) = drain(queue, 1)
    _failed_before_running(done)
    assert "HTTP error 404" in done.error and "/nothing-here" in done.error


def test_an_unreachable_url_and_an_unknown_scheme_fail_as_input_missing(queue, workers, server):
    closed = Server()  # a port of our own, then closed: connection refused
    port = closed.httpd.server_address[1]
    closed.httpd.server_close()
    unreachable = wq.Task("echo ran")
    unreachable.specify_url(f"http://127.0.0.1:{port}/data.txt", "data.txt")
    unknown = wq.Task("echo ran")
    unknown.specify_url("gopher://127.0.0.1/data.txt", "data.txt")
    queue.submit(unreachable)
    queue.submit(unknown)
    workers.start("--cores", "1")
    done = {t.id: t for t in drain(queue, 2)}
    for task in done.values():
        _failed_before_running(task)
    assert "refused" in done[unreachable.id].error.lower()
    assert "only http, https and file URLs" in done[unknown.id].error


@pytest.mark.parametrize(("cache", "hits"), [(True, 1), (False, 2)])
def test_a_cached_url_is_fetched_once_per_worker(queue, workers, server, cache, hits):
    for _ in range(2):
        task = wq.Task("cat data.txt")
        task.specify_url(server.url("/data.txt"), "data.txt", cache=cache)
        queue.submit(task)
    workers.start("--cores", "1")
    assert {t.output for t in drain(queue, 2)} == {"served over http\n"}
    assert server.hits["/data.txt"] == hits


def test_a_file_url(queue, workers, tmp_path):
    source = tmp_path / "local data.txt"
    source.write_text("from a file url\n")
    task = wq.Task("cat data.txt")
    task.specify_url(source.as_uri(), "data.txt", flags=wq.WORK_QUEUE_CACHE)
    queue.submit(task)
    workers.start("--cores", "1")
    (done,) = drain(queue, 1)
    assert (done.result, done.output) == (0, "from a file url\n")


def test_a_download_over_the_workers_limit_is_refused(queue, workers, server):
    task = wq.Task("echo ran")
    task.specify_url(server.url("/big.bin"), "big.bin", cache=True)
    queue.submit(task)
    workers.start("--cores", "1", "--max-task-bytes", "10000")
    (done,) = drain(queue, 1)
    _failed_before_running(done)
    assert "--max-task-bytes" in done.error


def test_a_file_command_makes_the_file(queue, workers, tmp_path):
    runs = tmp_path / "runs.log"
    tasks = []
    for cache in (True, True, False):
        task = wq.Task("cat made.txt; stat -c %a made.txt")
        task.specify_file_command(f"echo run >> {runs}; printf 'made by a command' > %%", "made.txt", cache=cache)
        tasks.append(task)
        queue.submit(task)
    workers.start("--cores", "1")
    done = {t.id: t for t in drain(queue, 3)}
    assert done[tasks[0].id].output == done[tasks[1].id].output == "made by a command555\n"  # cached: read-only
    assert done[tasks[2].id].output == "made by a command755\n"
    assert runs.read_text() == "run\nrun\n"  # once for the two cached, once for the other


def test_a_failing_file_command_fails_the_task_as_input_missing(queue, workers):
    failing = wq.Task("echo ran")
    failing.specify_file_command("echo the reason it broke; exit 3", "made.txt", cache=True)
    no_file = wq.Task("echo ran")
    no_file.specify_file_command("true", "made.txt")
    queue.submit(failing)
    queue.submit(no_file)
    workers.start("--cores", "1")
    done = {t.id: t for t in drain(queue, 2)}
    for task in done.values():
        _failed_before_running(task)
    assert "exit status 3" in done[failing.id].error and "the reason it broke" in done[failing.id].error
    assert "made no file" in done[no_file.id].error


def test_fetched_inputs_are_inputs_only():
    task = wq.Task("true")
    with pytest.raises(ValueError, match="does not support output files"):
        task.specify_url("http://127.0.0.1/x", "x", type=wq.WORK_QUEUE_OUTPUT)
    with pytest.raises(ValueError, match="does not support output files"):
        task.specify_file_command("true > %%", "x", type=wq.WORK_QUEUE_OUTPUT)
    with pytest.raises(ValueError, match="inside the sandbox"):
        task.specify_url("http://127.0.0.1/x", "../x")


def test_signed_urls_and_commands(redis_url, queue_name, workers, server):
    secret = "urls-are-signed"
    queue = wq.WorkQueue(queue_name, redis_url=redis_url, secret=secret)
    try:
        task = wq.Task("cat data.txt made.txt")
        task.specify_url(server.url("/data.txt"), "data.txt")
        task.specify_file_command("printf made > %%", "made.txt", cache=True)
        queue.submit(task)
        workers.start("--cores", "1", "--secret", secret)
        (done,) = drain(queue, 1)
        assert (done.result, done.output) == (0, "served over http\nmade")
    finally:
        queue.close()
