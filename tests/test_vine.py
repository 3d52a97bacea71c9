"""``import wq_redis.vine as vine``: TaskVine's Python API on the same engine.  Each test
reads as a TaskVine program (the manual's style), run against a real Redis and real
``wq-redis worker`` processes."""

from __future__ import annotations

import os
import warnings

import pytest

import wq_redis.vine as vine
from wq_redis.client.task import Task as EngineTask
from wq_redis.protocol.codes import Result
from wq_redis.vine.codes import from_engine, result_text


@pytest.fixture
def m(redis_url, queue_name):
    manager = vine.Manager(port=0, name=queue_name, redis_url=redis_url)
    yield manager
    manager.close()


def fail(message):
    raise ValueError(message)


def test_a_taskvine_program_runs_with_only_its_import_changed(m, workers):
    workers.start("--cores", "2")
    submitted = {}
    for word in ("needle", "house", "water"):
        t = vine.Task(f"echo {word} | tr a-z A-Z")
        t.set_cores(1)
        t.set_memory(10)
        t.set_tag(word)
        t.set_env_var("UNUSED", "1")
        submitted[m.submit(t)] = word
    failing = vine.Task("echo oops; exit 3", category="bad", retries=2)
    submitted[m.submit(failing)] = "bad"
    done = {}
    while not m.empty():
        t = m.wait(5)
        if t:
            done[t.id] = t
    assert set(done) == set(submitted)
    for task_id, word in submitted.items():
        t = done[task_id]
        if word == "bad":
            assert t.completed() and not t.successful() and t.exit_code == 3 and t.category == "bad"
        else:
            assert t.successful() and t.result == "success" and t.exit_code == 0
            assert t.output == t.std_output == word.upper() + "\n" and t.tag == word
            assert t.state == vine.VINE_TASK_DONE and t.hostname


def test_the_task_submitted_is_the_task_wait_returns(m, workers):
    workers.start()
    t = vine.Task("true")
    task_id = m.submit(t)
    assert m.wait(30) is t and t.id == task_id


def test_files_and_buffers_go_in_and_come_back(m, workers, tmp_path):
    workers.start()
    (tmp_path / "data.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "leaf").write_text("x")
    data = m.declare_file(str(tmp_path / "data.txt"), cache=True)
    tree = m.declare_file(str(tmp_path / "tree"))
    words = m.declare_buffer("alpha beta")
    count = m.declare_file(str(tmp_path / "count.txt"))
    echo = m.declare_buffer()
    t = vine.Task("wc -l < data.txt > count.txt && cat words tree/leaf > echo")
    t.add_input(data, "data.txt")
    t.add_input(tree, "tree")
    t.add_input(words, "words")
    t.add_output(count, "count.txt")
    t.add_output(echo, "echo")
    m.submit(t)
    t = m.wait(30)
    assert t is not None and t.successful(), (t.result, t.std_output)
    assert (tmp_path / "count.txt").read_text().strip() == "3"
    assert echo.contents() == b"alpha betax" and len(echo) == 11 and echo.type() == vine.VINE_BUFFER
    assert m.fetch_file(words) == "alpha beta" and data.source() == str(tmp_path / "data.txt")
    assert os.listdir(m.staging_directory) == []  # the staged copy of the buffer is gone


def test_an_output_buffer_feeds_the_next_task(m, workers):
    workers.start()
    between = m.declare_buffer()
    first = vine.Task("echo relay > out")
    first.add_output(between, "out")
    m.submit(first)
    assert m.wait(30).successful()
    second = vine.Task("cat in", inputs={between: "in"})
    m.submit(second)
    assert m.wait(30).output == "relay\n"


def test_a_missing_output_is_output_missing(m, workers, tmp_path):
    workers.start()
    t = vine.Task("true")
    t.add_output(m.declare_file(str(tmp_path / "never")), "never")
    m.submit(t)
    t = m.wait(30)
    assert t.result == "output missing" and not t.completed()


def test_python_task_returns_its_value_and_a_raising_one_no_result(m, workers):
    workers.start()
    ok = vine.PythonTask(pow, 2, 10)
    bad = vine.PythonTask(fail, "bad input 42")
    ids = {m.submit(ok): "ok", m.submit(bad): "bad"}
    got = {}
    while not m.empty():
        t = m.wait(5)
        if t:
            got[ids[t.id]] = t
    assert got["ok"].successful() and got["ok"].output == 1024
    assert got["bad"].completed() and got["bad"].exit_code == 1 and not got["bad"].successful()
    assert isinstance(got["bad"].output, vine.PythonTaskNoResult)
    assert "ValueError: bad input 42" in got["bad"].std_output


def test_cancelled_tasks_come_back_through_wait(m):
    ids = [m.submit(vine.Task("sleep 10", cores=1, tag="slow")) for _ in range(3)]
    assert m.cancel_by_task_id(ids[0]) == 1
    assert m.cancel_by_task_id(ids[0]) == 0 and m.cancel_by_task_id(999_999) == 0
    assert m.task_state(ids[0]) == vine.VINE_TASK_RETRIEVED
    assert m.cancel_by_task_tag("slow") == 1
    assert m.cancel_all() == 1
    back = []
    while not m.empty():
        t = m.wait(5)
        if t:
            back.append(t)
    assert sorted(t.id for t in back) == ids
    assert all(t.result == "cancelled" and t.exit_code == -1 and not t.completed() for t in back)
    assert m.wait(0) is None


def test_time_max_kills_a_task_as_max_wall_time(m, workers):
    workers.start()
    t = vine.Task("sleep 30")
    t.set_time_max(1)
    m.submit(t)
    t = m.wait(30)
    assert t.result == "max wall time" and not t.completed()


def test_stats_carry_taskvine_field_names(m, workers):
    workers.start("--cores", "3")
    for _ in range(2):
        m.submit(vine.Task("true"))
    while not m.empty():
        m.wait(5)
    s = m.stats
    assert (s.tasks_submitted, s.tasks_done, s.tasks_successful, s.tasks_failed) == (2, 2, 2, 0)
    assert s.workers_connected == 1 and s.total_cores == 3 and s.tasks_waiting == 0
    assert {"workers_joined", "time_when_started", "bytes_sent", "capacity_weighted", "inuse_cache"} <= set(
        vine.VineStats.__dataclass_fields__
    )
    assert m.stats_category("default").tasks_done == 2


def test_hungry_counts_tasks_wanted(m, workers):
    assert m.hungry() == 10  # TaskVine's hungry-minimum when nothing runs or waits
    m.tune("hungry-minimum", 3)
    assert m.hungry() == 3
    for _ in range(5):
        m.submit(vine.Task("true", cores=1))
    assert m.hungry() == 0  # five wait, more than three wanted and no worker offers cores


def test_result_codes_have_taskvine_values_and_strings():
    assert (vine.VINE_RESULT_SUCCESS, vine.VINE_RESULT_MAX_WALL_TIME, vine.VINE_RESULT_RMONITOR_ERROR) == (0, 56, 64)
    assert (vine.VINE_RESULT_CANCELLED, vine.VINE_RESULT_SANDBOX_EXHAUSTION, vine.VINE_RESULT_MISSING_LIBRARY) == (
        88,
        104,
        112,
    )
    assert vine.vine_result_string(vine.VINE_RESULT_RMONITOR_ERROR) == "MONITOR_ERROR"
    # translated by meaning: Work Queue's 64 is DISK_ALLOC_FULL, TaskVine's is RMONITOR_ERROR
    assert from_engine(Result.DISK_ALLOC_FULL) == vine.VINE_RESULT_SANDBOX_EXHAUSTION
    assert from_engine(Result.RMONITOR_ERROR) == vine.VINE_RESULT_RMONITOR_ERROR
    assert result_text(from_engine(Result.TASK_TIMEOUT)) == "max end time"
    assert {result_text(code) for code in vine.VineResult} >= {"input missing", "monitor error", "cancelled"}


def test_task_info_keywords_are_the_setters():
    t = vine.Task("true", cores=2, memory=100, disk=50, gpus=0, tag="t", category="c", priority=3, env={"A": "1"})
    r = t.resources_requested
    assert (r.cores, r.memory, r.disk, r.gpus, t.tag, t.category) == (2, 100, 50, 0, "t", "c")
    assert t.result == "unknown" and t.exit_code == -1 and t.state == vine.VINE_TASK_INITIAL
    with pytest.raises(TypeError, match="Did you mean"):
        vine.Task({"command": "true"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="remote_name"):
        t.add_input(vine.File(vine.VINE_BUFFER, None, False, b"x"), None)  # type: ignore[arg-type]


def test_declare_url_maps_onto_the_engines_specify_url(m, monkeypatch):
    calls = []

    def specify_url(self, url, remote_name, flags=None, cache=None):
        calls.append((url, remote_name, cache))

    monkeypatch.setattr(EngineTask, "specify_url", specify_url)
    f = m.declare_url("http://127.0.0.1:1/data.txt", cache="workflow")
    t = vine.Task("cat data.txt")
    t.add_input(f, "data.txt")
    assert calls[-1] == ("http://127.0.0.1:1/data.txt", "data.txt", True)
    assert f.type() == vine.VINE_URL and f.source() == "http://127.0.0.1:1/data.txt"


def test_declare_url_refuses_clearly_when_the_engine_cannot_fetch_urls(m, monkeypatch):
    def specify_url(self, *args, **kwargs):
        raise NotImplementedError("specify_url() is not available")

    monkeypatch.setattr(EngineTask, "specify_url", specify_url)
    with pytest.raises(NotImplementedError, match=r"declare_url.*specify_url"):
        m.declare_url("http://127.0.0.1:1/x")


def test_serverless_and_worker_side_files_are_refused_clearly(m):
    with pytest.raises(NotImplementedError, match="serverless"):
        vine.LibraryTask("lib")
    with pytest.raises(NotImplementedError, match="serverless"):
        vine.FunctionCall("lib", "fn", 1)
    with pytest.raises(NotImplementedError, match="serverless"):
        m.create_library_from_functions("lib", pow)
    with pytest.raises(NotImplementedError, match="declare_temp"):
        m.declare_temp()
    with pytest.raises(ValueError, match="cache level"):
        m.declare_file("x", cache="sometimes")


def test_taskvines_port_is_accepted_silently(redis_url, queue_name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with vine.Manager([9123, 9129], name=queue_name, redis_url=redis_url) as m:
            assert m.port == 0 and m.name == queue_name
