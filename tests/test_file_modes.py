"""Permission bits travel with files, as in Work Queue: an executable input runs on the
worker (inline, cached, inside a directory, a buffer), and an output comes back with the
mode the worker saw."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from conftest import drain

import wq_redis as wq
from wq_redis.protocol.signing import SignatureError, Signer


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


@pytest.fixture
def exec_file(tmp_path) -> str:
    """A copy of /bin/cat that only its owner may run (the issue's case)."""
    path = tmp_path / "exec.file"
    shutil.copy("/bin/cat", path)
    os.chmod(path, 0o700)
    return str(path)


@pytest.fixture
def input_file(tmp_path) -> str:
    path = tmp_path / "input.file"
    path.write_text("the content of the input\n")
    return str(path)


@pytest.mark.parametrize("cache", [False, True])
def test_an_executable_input_runs_on_the_worker(queue, workers, exec_file, input_file, cache):
    tasks = []
    for _ in range(2):  # the second one finds the cached copy
        task = wq.Task("./exec.file input.file && stat -c %a exec.file input.file")
        task.specify_input_file(exec_file, "exec.file", cache=cache)
        task.specify_input_file(input_file, "input.file", cache=cache)
        tasks.append(task)
    for task in tasks:
        queue.submit(task)
    workers.start("--cores", "1")
    for task in drain(queue, 2):
        assert (task.result, task.return_status) == (wq.WORK_QUEUE_RESULT_SUCCESS, 0), task.output
        content, exec_mode, input_mode = task.output.rsplit("\n", 3)[:3]
        assert content == "the content of the input"
        if cache:  # shared by hard links: read-only, the execute bit kept
            assert (exec_mode, input_mode) == ("500", "444")
        else:
            assert (exec_mode, input_mode) == (f"{0o700 & ~_umask():o}", f"{0o644 & ~_umask():o}")


def test_a_cached_executable_and_a_cached_plain_file_share_one_cache_entry(queue, workers, tmp_path, exec_file):
    """The read-only executable copy is made once; the plain cached file stays the one hard
    link every task shares (its inode is the same for both tasks)."""
    plain = tmp_path / "plain"
    shutil.copy(exec_file, plain)
    os.chmod(plain, 0o644)
    tasks = []
    for _ in range(2):
        task = wq.Task("stat -c '%i %a' exec.file plain | tr '\\n' ' '")
        task.specify_input_file(exec_file, "exec.file", cache=True)
        task.specify_input_file(str(plain), "plain", cache=True)
        tasks.append(task)
        queue.submit(task)
    workers.start("--cores", "1")
    outputs = {t.output for t in drain(queue, 2)}
    assert len(outputs) == 1  # the same inodes both times: nothing copied per task
    exec_inode, exec_mode, plain_inode, plain_mode = outputs.pop().split()
    assert (exec_mode, plain_mode) == ("500", "444") and exec_inode != plain_inode


def test_a_directory_keeps_its_files_modes(queue, workers, tmp_path):
    tree = tmp_path / "tools"
    tree.mkdir()
    script = tree / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from the script\n")
    os.chmod(script, 0o750)
    task = wq.Task("./tools/hello.sh")
    task.specify_directory(str(tree), "tools", recursive=True)
    queue.submit(task)
    workers.start("--cores", "1")
    (done,) = drain(queue, 1)
    assert (done.result, done.return_status, done.output) == (0, 0, "hello from the script\n")


def test_a_buffer_is_executable_as_in_work_queue(queue, workers):
    task = wq.Task("./script.sh")
    task.specify_buffer("#!/bin/sh\necho from a buffer\n", "script.sh")
    queue.submit(task)
    workers.start("--cores", "1")
    (done,) = drain(queue, 1)
    assert (done.result, done.return_status, done.output) == (0, 0, "from a buffer\n")


def test_an_output_comes_back_with_the_mode_the_worker_saw(queue, workers, tmp_path):
    task = wq.Task(
        "printf run > run.sh && chmod 0750 run.sh && printf plain > plain.txt && "
        "printf private > private.txt && chmod 0600 private.txt && "
        "mkdir out && printf x > out/tool && chmod 0710 out/tool"
    )
    for name in ("run.sh", "plain.txt", "private.txt"):
        task.specify_output_file(str(tmp_path / name), name)
    task.specify_directory(str(tmp_path / "out"), "out", type=wq.WORK_QUEUE_OUTPUT)
    queue.submit(task)
    workers.start("--cores", "1")
    (done,) = drain(queue, 1)
    assert (done.result, done.return_status) == (0, 0), done.error
    assert (tmp_path / "run.sh").read_text() == "run"
    assert _mode(str(tmp_path / "run.sh")) == 0o750 & ~_umask()
    assert _mode(str(tmp_path / "plain.txt")) == 0o644 & ~_umask()
    assert _mode(str(tmp_path / "private.txt")) == 0o600
    assert _mode(str(tmp_path / "out" / "tool")) == 0o710


def test_signed_executable_inputs_run_and_their_mode_is_signed(redis_url, queue_name, workers, exec_file, input_file):
    secret = "modes-are-signed"
    queue = wq.WorkQueue(queue_name, redis_url=redis_url, secret=secret)
    try:
        task = wq.Task("./exec.file input.file")
        task.specify_input_file(exec_file, "exec.file")
        task.specify_input_file(input_file, "input.file")
        queue.submit(task)
        workers.start("--cores", "1", "--secret", secret)
        (done,) = drain(queue, 1)
        assert (done.result, done.return_status, done.output) == (0, 0, "the content of the input\n")
    finally:
        queue.close()
    signer = Signer(secret.encode(), queue_name)
    fields = {b"in:exec.file": b"\x7fELF", b"im:exec.file": b"700", b"url:d": b"http://h/d", b"cfcmd:m": b"true"}
    signature = signer.sign_task(1, fields).encode()
    for changed in (
        {**fields, b"im:exec.file": b"755"},
        {k: v for k, v in fields.items() if k != b"im:exec.file"},
        {**fields, b"url:d": b"http://elsewhere/d"},
        {**fields, b"cfcmd:m": b"rm -rf ~"},
    ):
        with pytest.raises(SignatureError):
            signer.verify_task(1, {**changed, b"sig": signature})
    signer.verify_task(1, {**fields, b"sig": signature})


def test_only_unusual_modes_travel(queue, tmp_path, exec_file, input_file):
    """A plain 0644 file adds no field to the task's hash (the hot path stays as it was)."""
    from wq_redis.client.files import FileStager

    task = wq.Task("true")
    task.specify_input_file(exec_file, "exec.file")
    task.specify_input_file(input_file, "input.file")
    os.chmod(input_file, 0o644)
    fields = FileStager(use_cache=False).input_fields(task._spec.inputs)
    assert fields["im:exec.file"] == "700" and "im:input.file" not in fields
    os.chmod(input_file, 0o400)  # the owner always may write (Work Queue's worker adds 0600)
    assert FileStager(use_cache=False).input_fields(task._spec.inputs)["im:input.file"] == "600"
