"""Cached input files, directories in and out, and size limits on inputs."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
import redis
from conftest import drain
from everyday_tasks import read_input

import wq_redis as wq
from wq_redis.protocol.keys import QueueKeys
from wq_redis.worker.cache import FileCache


def _file(path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_a_cached_input_used_by_100_tasks_is_uploaded_once_and_stored_once_per_worker(
    queue, workers, redis_url, queue_name, tmp_path
):
    data = os.urandom(200_000)
    source = _file(tmp_path / "input.bin", data)
    tasks = []
    for _ in range(100):
        task = wq.Task("stat -c %i input.bin; md5sum < input.bin")
        task.specify_input_file(source, "input.bin", cache=True)
        tasks.append(task)
    queue.submit_many(tasks[:50])
    for task in tasks[50:]:
        queue.submit(task)
    client = redis.Redis.from_url(redis_url)
    keys = QueueKeys(queue_name)
    fields = client.hgetall(keys.task(tasks[0].id))
    assert fields[b"cin:input.bin"] == hashlib.sha256(data).hexdigest().encode() and b"in:input.bin" not in fields
    assert queue.files_uploaded == 1
    assert int(client.hget(keys.stats, "files_uploaded")) == 1
    assert len(list(client.scan_iter(match=keys.file("*")))) == 1

    workers.start("--cores", "4")
    done = drain(queue, 100)
    assert all(t.result == wq.WORK_QUEUE_RESULT_SUCCESS and t.return_status == 0 for t in done)
    inodes = {t.output.split()[0] for t in done}
    checksums = {t.output.split()[1] for t in done}
    assert len(inodes) == 1  # every sandbox linked the one cached copy
    assert checksums == {hashlib.md5(data).hexdigest()}


def test_a_changed_cached_input_is_uploaded_again(queue, workers, tmp_path):
    path = tmp_path / "input.txt"
    source = _file(path, b"first")
    task = wq.PythonTask(read_input, "input.txt")
    task.specify_input_file(source, cache=True)
    queue.submit(task)
    path.write_bytes(b"second version")
    later = wq.PythonTask(read_input, "input.txt")
    later.specify_input_file(source, cache=True)
    queue.submit(later)
    assert queue.files_uploaded == 2
    workers.start("--cores", "2")
    assert sorted(t.output for t in drain(queue, 2)) == ["first", "second version"]


def test_the_worker_cache_keeps_within_its_size_by_evicting_the_least_recently_used(queue, workers, tmp_path):
    workdir = tmp_path / "worker"
    worker = workers.start("--cores", "1", "--cache-size", "1", "--workdir", str(workdir))
    digests = []
    for name in "abc":
        data = os.urandom(600_000)
        digests.append(hashlib.sha256(data).hexdigest())
        task = wq.Task("wc -c < blob")
        task.specify_input_file(_file(tmp_path / name, data), "blob", cache=True)
        queue.submit(task)
        assert queue.wait(30).output.strip() == "600000"
    assert sorted(os.listdir(workdir / f"cache.{worker.pid}")) == [digests[2]]


def test_an_input_directory_arrives_whole_and_an_output_directory_comes_back(queue, workers, tmp_path):
    _file(tmp_path / "tree" / "a.txt", b"A")
    _file(tmp_path / "tree" / "sub" / "b.txt", b"B")
    task = wq.Task("find data -type f | sort; mkdir -p out/deep; cat data/a.txt data/sub/b.txt > out/deep/ab.txt")
    task.specify_directory(str(tmp_path / "tree"), "data", recursive=True)
    task.specify_directory(str(tmp_path / "results"), "out", type=wq.WORK_QUEUE_OUTPUT)
    workers.start("--cores", "2")
    queue.submit(task)
    assert queue.wait(30) is task and task.result == wq.WORK_QUEUE_RESULT_SUCCESS
    assert task.output.split() == ["data/a.txt", "data/sub/b.txt"]
    assert (tmp_path / "results" / "deep" / "ab.txt").read_text() == "AB"


def test_a_cached_directory_is_stored_once_for_many_tasks(queue, workers, tmp_path):
    _file(tmp_path / "tree" / "x.txt", b"X")
    for _ in range(5):
        task = wq.Task("cat data/x.txt")
        task.specify_directory(str(tmp_path / "tree"), "data", recursive=True, cache=True)
        queue.submit(task)
    assert queue.files_uploaded == 1
    workers.start("--cores", "2")
    assert [t.output for t in drain(queue, 5)] == ["X"] * 5


def test_a_directory_without_recursive_is_created_empty(queue, workers, tmp_path):
    _file(tmp_path / "tree" / "x.txt", b"X")
    task = wq.Task("ls -A data | wc -l")
    task.specify_directory(str(tmp_path / "tree"), "data")
    workers.start("--cores", "1")
    queue.submit(task)
    assert queue.wait(30).output.strip() == "0"


def test_a_missing_output_directory_is_output_missing(queue, workers, tmp_path):
    task = wq.Task("true")
    task.specify_directory(str(tmp_path / "never"), "out", type=wq.WORK_QUEUE_OUTPUT)
    workers.start("--cores", "1")
    queue.submit(task)
    assert queue.wait(30).result == wq.WORK_QUEUE_RESULT_OUTPUT_MISSING
    assert not (tmp_path / "never").exists()


def test_an_input_file_over_the_per_file_limit_is_refused_at_submit(queue, tmp_path):
    queue.specify_file_limits(max_file_bytes=1000)
    task = wq.Task("true")
    task.specify_input_file(_file(tmp_path / "big.bin", b"x" * 1001), cache=True)
    with pytest.raises(wq.FileTooLarge, match=r"big\.bin.*limit") as caught:
        queue.submit(task)
    assert isinstance(caught.value, ValueError)
    assert queue.stats.tasks_submitted == 0 and queue.files_uploaded == 0


def test_inputs_over_the_per_task_total_are_refused_at_submit(queue, tmp_path):
    queue.specify_file_limits(max_file_bytes=1000, max_task_bytes=1500)
    task = wq.Task("true")
    task.specify_input_file(_file(tmp_path / "one.bin", b"x" * 800))
    task.specify_buffer(b"y" * 800, "two.bin")
    with pytest.raises(ValueError, match=r"total 1\.6 KiB, over the limit of 1\.5 KiB"):
        queue.submit(task)
    assert queue.stats.tasks_submitted == 0


# -- the worker's cache, alone ----------------------------------------------------------------
def _store(*blobs: bytes) -> tuple[dict[str, bytes], list[str]]:
    store = {hashlib.sha256(b).hexdigest(): b for b in blobs}
    return store, list(store)


def test_file_cache_fetches_once_for_tasks_asking_at_the_same_time(tmp_path):
    store, (digest,) = _store(b"shared")
    calls = []

    def fetch(d):
        calls.append(d)
        threading.Event().wait(0.2)  # slow network: the others must wait for this fetch
        return store.get(d)

    cache = FileCache(str(tmp_path / "cache"), 10_000, fetch)
    threads = [threading.Thread(target=cache.link_into, args=(digest, str(tmp_path / f"s{i}" / "f"))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [digest]
    assert {os.stat(tmp_path / f"s{i}" / "f").st_ino for i in range(8)} == {os.stat(cache.path(digest)).st_ino}


def test_file_cache_refetches_a_copy_a_task_changed(tmp_path):
    store, (digest,) = _store(b"original")
    cache = FileCache(str(tmp_path / "cache"), 10_000, store.get)
    cache.link_into(digest, str(tmp_path / "sandbox" / "f"))
    os.chmod(tmp_path / "sandbox" / "f", 0o644)
    (tmp_path / "sandbox" / "f").write_bytes(b"scribbled over")  # the same inode as the cached copy
    with open(cache.path(digest), "rb") as handle:
        assert handle.read() == b"original"
    assert cache.fetches == 2


def test_file_cache_reports_an_input_gone_from_redis(tmp_path):
    cache = FileCache(str(tmp_path / "cache"), 10_000, lambda d: None)
    with pytest.raises(FileNotFoundError, match="no longer in Redis"):
        cache.path("0" * 64)


def test_file_cache_starts_empty_in_a_reused_workdir(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / ("e" * 64)).write_bytes(b"left by an earlier worker")
    cache = FileCache(str(tmp_path / "cache"), 10_000, lambda d: None)
    assert os.listdir(tmp_path / "cache") == [] and cache.size == 0
