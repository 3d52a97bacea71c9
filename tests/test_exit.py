"""Leaving nothing behind: a program that never closes its queue, Ctrl-C, and the work
directories of workers, removed on every exit they control and, when they die without
removing them, by the next worker to start (issue 14, item 7)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import psutil
import pytest
from conftest import wait_until

from wq_redis.worker.workdir import LOCK_NAME, PREFIX, WorkDir, remove_orphans

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG = 20  # seconds: only a hang detector, the exit itself takes well under one


def seed_example() -> str:
    """The README's seed example, exactly as a new user copies it."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    section = readme[readme.index("## The seed example") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def program_env(tmp_path) -> dict[str, str]:
    """No Redis URL (the embedded server), and a temporary directory of the test's own,
    so that what the program leaves behind there is seen."""
    env = {k: v for k, v in os.environ.items() if k not in ("WQ_REDIS_URL", "REDIS_URL")}
    env["TMPDIR"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return env


def left_behind(tmp_path) -> list[str]:
    return sorted(n for n in os.listdir(tmp_path) if n.startswith(("wq-redis-worker-", "wq-redis-server-")))


def processes_of(tmp_path) -> list[psutil.Process]:
    """Processes of the program's (the server's data directory or the workers' TMPDIR is
    under ``tmp_path``); they run in sessions of their own, so no process group finds them."""
    found = []
    for process in psutil.process_iter():
        try:
            if str(tmp_path) in " ".join(process.cmdline()) or process.environ().get("TMPDIR") == str(tmp_path):
                found.append(process)
        except psutil.Error:
            pass
    return found


def run_program(tmp_path, source: str) -> subprocess.Popen[str]:
    script = tmp_path / "program.py"
    script.write_text(source)
    # a session of its own, like a program in a terminal: a Ctrl-C goes to its group
    return subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=program_env(tmp_path),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def finish(program: subprocess.Popen[str], tmp_path) -> tuple[str, str]:
    try:
        return program.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        for process in processes_of(tmp_path):
            process.kill()
        program.kill()
        _, err = program.communicate()
        pytest.fail(f"the program did not exit within {HANG} s: {err[-2000:]}")


def test_the_seed_example_as_written_exits_without_warnings_and_leaves_nothing_behind(tmp_path):
    program = run_program(tmp_path, seed_example())
    out, err = finish(program, tmp_path)
    assert program.returncode == 0, err
    assert re.search(r"task \d+ completed with result 30", out)
    assert "Connection refused" not in err and "Traceback" not in err
    assert left_behind(tmp_path) == []
    assert processes_of(tmp_path) == []


def test_local_workers_log_nothing_about_the_resources_the_program_declared(tmp_path):
    # the seed example declares 4 cores and a GPU, whatever the machine has
    program = run_program(tmp_path, seed_example())
    _, err = finish(program, tmp_path)
    assert program.returncode == 0, err
    assert "declared" not in err
    assert " INFO " not in err  # local workers log warnings and errors only


CTRL_C_PROGRAM = """
import time
import wq_redis as wq

queue = wq.WorkQueue("ctrl-c", local_workers=1)
queue.submit(wq.PythonTask(time.sleep, 1))
print("waiting", flush=True)
queue.wait(60)
"""


def test_one_ctrl_c_stops_a_program_with_local_workers_once_and_cleanly(tmp_path):
    program = run_program(tmp_path, CTRL_C_PROGRAM)
    assert program.stdout.readline() == "waiting\n"
    assert wait_until(
        lambda: any(
            "sleep" in str(p.cmdline()) or "wq_redis.worker.child" in p.cmdline()
            for p in processes_of(tmp_path)
            if p.is_running()
        ),
        timeout=HANG,
    )
    os.killpg(program.pid, signal.SIGINT)  # what a terminal does on Ctrl-C: the whole foreground group
    _, err = finish(program, tmp_path)
    assert "second" not in err.lower()  # no "second SIGTERM: stopping now"
    assert "Connection refused" not in err
    assert left_behind(tmp_path) == []
    assert processes_of(tmp_path) == []


# -- work directories ----------------------------------------------------------------------


def test_a_work_directory_is_removed_with_its_lock(tmp_path):
    workdir = WorkDir(str(tmp_path))
    assert os.path.basename(workdir.path).startswith(PREFIX)
    workdir.remove()
    assert os.listdir(tmp_path) == []


def test_a_live_workers_directory_is_never_swept(tmp_path):
    workdir = WorkDir(str(tmp_path))
    try:
        assert remove_orphans(str(tmp_path)) == 0
        assert os.path.isdir(workdir.path)
    finally:
        workdir.remove()


def test_a_killed_workers_directory_is_swept(tmp_path):
    code = (
        "import sys, time; from wq_redis.worker.workdir import WorkDir; "
        "print(WorkDir(sys.argv[1]).path, flush=True); time.sleep(60)"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=program_env(tmp_path)
    )
    try:
        path = owner.stdout.readline().strip()
        assert remove_orphans(str(tmp_path)) == 0  # its owner still holds the lock
    finally:
        owner.kill()
        owner.wait()
    assert os.path.isdir(path)
    assert remove_orphans(str(tmp_path)) == 1
    assert not os.path.exists(path)


def _legacy_dir(tmp_path, pid: int) -> str:
    """A directory as workers made them before the lock: the file cache named for the pid."""
    path = tmp_path / f"{PREFIX}legacy{pid}"
    (path / f"cache.{pid}").mkdir(parents=True)
    return str(path)


def test_a_directory_from_before_the_lock_is_swept_when_its_owner_is_gone(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = _legacy_dir(tmp_path, gone.pid)
    if psutil.pid_exists(gone.pid):
        pytest.skip("the pid was reused already")
    assert remove_orphans(str(tmp_path)) == 1
    assert not os.path.exists(path)


def test_a_directory_from_before_the_lock_is_kept_while_its_owner_lives(tmp_path):
    path = _legacy_dir(tmp_path, os.getpid())
    assert remove_orphans(str(tmp_path)) == 0
    assert os.path.isdir(path)


def test_a_directory_whose_lock_is_not_in_place_yet_is_kept(tmp_path):
    path = tmp_path / f"{PREFIX}justmade"
    path.mkdir()
    assert remove_orphans(str(tmp_path)) == 0
    assert path.is_dir()


def worker_dirs(tmp_path) -> list[str]:
    return sorted(n for n in os.listdir(tmp_path) if n.startswith(PREFIX))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_removes_its_work_directory_when_stopped(workers, tmp_path, stop):
    worker = workers.start(env={"TMPDIR": str(tmp_path)})
    assert wait_until(lambda: any(os.path.exists(os.path.join(tmp_path, d, LOCK_NAME)) for d in worker_dirs(tmp_path)))
    worker.send_signal(stop)
    assert worker.wait(HANG) == 0
    assert worker_dirs(tmp_path) == []


def test_a_worker_removes_its_work_directory_when_it_ends_by_itself(workers, tmp_path):
    worker = workers.start("--burst", env={"TMPDIR": str(tmp_path)})
    assert worker.wait(HANG) == 0
    assert worker_dirs(tmp_path) == []


def test_a_worker_removes_its_work_directory_when_it_fails_to_start(workers, tmp_path):
    import socket

    with socket.socket() as taken:  # its metrics port is taken: the worker exits with an error
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        worker = workers.start(
            "--metrics-port", str(taken.getsockname()[1]), "--metrics-addr", "127.0.0.1", env={"TMPDIR": str(tmp_path)}
        )
        assert worker.wait(HANG) != 0
    assert worker_dirs(tmp_path) == []


def test_a_worker_removes_the_directories_of_killed_workers_at_start(workers, tmp_path):
    killed = workers.start(env={"TMPDIR": str(tmp_path)})
    assert wait_until(lambda: any(os.path.exists(os.path.join(tmp_path, d, LOCK_NAME)) for d in worker_dirs(tmp_path)))
    killed.kill()
    killed.wait()
    assert len(worker_dirs(tmp_path)) == 1
    alive = workers.start(env={"TMPDIR": str(tmp_path)})  # stays up: its own directory remains
    assert wait_until(
        lambda: len(worker_dirs(tmp_path)) == 1 and alive.poll() is None and _owner_of(tmp_path) == alive.pid
    )
    alive.send_signal(signal.SIGTERM)
    assert alive.wait(HANG) == 0
    assert worker_dirs(tmp_path) == []


def _owner_of(tmp_path) -> int | None:
    for name in worker_dirs(tmp_path):
        try:
            with open(os.path.join(tmp_path, name, LOCK_NAME)) as handle:
                return int(handle.read().strip() or 0)
        except (OSError, ValueError):
            return None
    return None
