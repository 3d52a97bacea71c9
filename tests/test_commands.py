"""Command tasks: the shell-free path for simple commands (worker/command.py) gives what
``/bin/sh -c`` gives, and the guardian (worker/guardian.py) kills a dead worker's tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from conftest import wait_until

import wq_redis as wq
from wq_redis.protocol.resources import Request
from wq_redis.protocol.serialize import pack_spec
from wq_redis.worker import command
from wq_redis.worker.pool import WarmPool
from wq_redis.worker.runner import Slot, TaskRun

needs_dash = pytest.mark.skipif(not command.DIRECT, reason="/bin/sh is not dash: every command goes through it")


# -- which commands skip the shell -----------------------------------------------------
@pytest.mark.parametrize("text", ["/bin/true", "  /bin/echo a-b c=d 1.5 x:y,z +%@  ", "./prog\targ", "env"])
@needs_dash
def test_simple_commands_run_without_the_shell(text, tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    found = command.direct_argv(text, env, str(tmp_path))
    if text == "./prog\targ":
        assert found == ("./prog", ["./prog", "arg"])
    else:
        assert found is not None and found[1] == text.split()


@pytest.mark.parametrize(
    "text",
    [
        "true",
        "echo hi",
        "cd /",
        "exit 3",
        "kill -9 1",
        "test -f x",
        "[ -f x ]",
        "if",
        "A=1 /bin/true",  # shell's own
        "/bin/echo $HOME",
        "/bin/echo 'a'",
        '/bin/echo "a"',
        "/bin/echo a\\ b",
        "/bin/echo *",
        "/bin/echo ?",
        "/bin/echo ~",
        "/bin/true # c",
        "/bin/true; /bin/true",
        "/bin/true && x",
        "/bin/true | cat",
        "/bin/true > f",
        "/bin/true &",
        "/bin/true\n/bin/false",
        "(/bin/true)",
        "/bin/echo {a,b}",
        "/bin/echo é",
        "",
        "   ",
        "no-such-program-anywhere",
    ],
)
def test_anything_else_goes_through_the_shell(text, tmp_path):
    assert command.direct_argv(text, {"PATH": "/usr/bin:/bin"}, str(tmp_path)) is None


def test_without_path_the_shell_looks_for_the_program(tmp_path):
    assert command.direct_argv("env", {}, str(tmp_path)) is None
    assert command.direct_argv("env", {"PATH": "/usr/bin%builtin"}, str(tmp_path)) is None


# -- the same results either way ---------------------------------------------------------
@pytest.fixture
def run_command(tmp_path, monkeypatch):
    """Run a command task in-process (no Redis); ``shell=True`` forces ``/bin/sh -c``."""
    pool = WarmPool(max_idle=1, hide_gpus=False)
    workdir = tmp_path / "work"
    workdir.mkdir()
    ids = iter(range(1, 1_000_000))
    direct = command.DIRECT

    def run(
        text: str, env: dict[str, str | None] | None = None, shell: bool = False, files: dict[str, bytes] | None = None
    ) -> dict:
        monkeypatch.setattr(command, "DIRECT", direct and not shell)
        fields = {b"spec": pack_spec({"kind": "cmd", "command": text, "env": env or {}}), b"a": b"1"}
        for name, data in (files or {}).items():
            fields[b"in:" + name.encode()] = data
        result = TaskRun(next(ids), fields, Slot(Request(), [], str(workdir), pool, lambda _: None, 1 << 20)).execute()
        assert result is not None
        return {"rs": 0, "out": b"", **result}  # a worker leaves out a zero status, empty output

    yield run
    pool.close()


def _same(a: dict, b: dict) -> None:
    assert (a["r"], a["rs"], a["out"], a.get("err")) == (b["r"], b["rs"], b["out"], b.get("err"))


DIE = b"""import os, signal, sys
n = int(sys.argv[1])
if n != signal.SIGKILL:
    signal.signal(n, signal.SIG_DFL)
print('before', flush=True)
os.kill(os.getpid(), n)
"""


@needs_dash
@pytest.mark.parametrize(
    "number",
    [signal.SIGSEGV, signal.SIGTERM, signal.SIGKILL, signal.SIGABRT, signal.SIGINT, signal.SIGPIPE, signal.SIGUSR1],
)
def test_a_program_killed_by_a_signal_is_reported_as_the_shell_reports_it(run_command, number):
    text = f"{sys.executable} die.py {int(number)}"
    assert command.direct_argv(text, dict(os.environ), "/") is not None
    direct = run_command(text, files={"die.py": DIE})
    shell = run_command(text, files={"die.py": DIE}, shell=True)
    _same(direct, shell)
    assert direct["rs"] == 128 + number and direct["out"].startswith(b"before\n")


@needs_dash
def test_the_environment_is_the_one_the_shell_passes_on(run_command, monkeypatch, tmp_path):
    monkeypatch.setenv("PWD", str(tmp_path))  # the worker's, stale in the sandbox
    env = {"PLAIN": "1", "NOT-A-NAME": "x", "a.b": "y", "EMPTY": "", "CUDA_VISIBLE_DEVICES": "0"}
    direct = run_command("/usr/bin/env -0", env)  # NUL-separated: a value may hold newlines
    shell = run_command("/usr/bin/env -0", env, shell=True)
    assert direct["r"] == shell["r"] == 0
    seen = _variables(direct["out"])
    assert seen == _variables(shell["out"])
    assert seen["PLAIN"] == "1" and seen["EMPTY"] == "" and "NOT-A-NAME" not in seen and "a.b" not in seen
    assert seen["PWD"] == "SANDBOX"  # the task's directory, not the worker's


def _variables(output: bytes) -> dict[str, str]:
    """A task's environment with its own sandbox and id taken out (they differ per task)."""
    found = dict(entry.split("=", 1) for entry in output.decode().split("\0") if entry)
    sandbox = found["WQ_SANDBOX"]
    found.pop("WQ_TASK_ID")
    return {k: v.replace(os.path.realpath(sandbox), "SANDBOX").replace(sandbox, "SANDBOX") for k, v in found.items()}


@needs_dash
def test_failures_to_start_read_as_the_shell_words_them(run_command, tmp_path):
    plain = tmp_path / "not-executable"
    plain.write_text("echo no\n")
    script = tmp_path / "no-shebang"
    script.write_text("echo from a script without '#!'\nexit 4\n")
    script.chmod(0o755)
    texts = (str(plain), str(script), "./absent", "/bin/false", "/bin/ls -d .", f"{tmp_path}/absent arg")
    assert all(command.direct_argv(text, dict(os.environ), str(tmp_path)) is not None for text in texts)
    for text in texts:
        _same(run_command(text), run_command(text, shell=True))
    assert run_command(str(script))["rs"] == 4
    assert run_command(str(plain))["rs"] == 126


# -- the guardian ---------------------------------------------------------------------------
FAKE_WORKER = textwrap.dedent("""
    import os, subprocess, sys, time
    from wq_redis.worker.guardian import guardian
    from wq_redis.worker.pool import worker_lifeline
    sandbox, mode = sys.argv[1], sys.argv[2]
    guard = guardian(worker_lifeline())
    guard.expect(sandbox)
    env = dict(os.environ, WQ_SANDBOX=sandbox)
    if mode == "unregistered-no-env":  # found by its working directory instead
        del env["WQ_SANDBOX"]
    task = subprocess.Popen(["/bin/sh", "-c", "sleep 60 & sleep 60"], cwd=sandbox, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    if not mode.startswith("unregistered"):  # else: the worker dies between the fork and registering the group
        guard.started(sandbox, task.pid)
    if mode == "restart":  # the guardian dies; the next record starts another, told of every live task
        old = guard.pid
        os.kill(old, 9)
        time.sleep(0.2)
        guard.expect(sandbox + ".other")
        assert guard.pid != old
    print(task.pid, guard.pid, flush=True)
    time.sleep(60)
""")


@pytest.mark.faults
@pytest.mark.parametrize("mode", ["registered", "unregistered", "unregistered-no-env", "restart"])
def test_the_guardian_kills_a_sigkilled_workers_tasks(tmp_path, mode):
    sandbox = tmp_path / "t1.1"
    sandbox.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    worker = subprocess.Popen(
        [sys.executable, "-c", FAKE_WORKER, str(sandbox), mode],
        env=env,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        task_pid, guardian_pid = map(int, worker.stdout.readline().split())
        task = psutil.Process(task_pid)
        assert wait_until(lambda: len(task.children()) == 2)
        doomed = [task, *task.children(), psutil.Process(guardian_pid)]
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        _, alive = psutil.wait_procs(doomed, timeout=10)
        assert not alive, f"left running after the worker died: {alive}"
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()


@pytest.mark.faults
def test_a_sigkilled_workers_command_tasks_and_their_children_die(queue, workers):
    doomed = workers.start("--cores", "2", "--lease-seconds", "1")
    tasks = [wq.Task("sleep 60"), wq.Task("sleep 60 & sleep 60")]  # without and with the shell
    for task in tasks:
        task.specify_cores(1)  # both at once
    queue.submit_many(tasks)
    assert wait_until(lambda: queue.stats.tasks_running == 2)
    worker = psutil.Process(doomed.pid)
    assert wait_until(lambda: sum(p.name() == "sleep" for p in worker.children(recursive=True)) == 3)
    time.sleep(0.2)
    children = worker.children(recursive=True)
    assert any(p.cmdline()[1:3] == ["-I", "-S"] for p in children), "the guardian runs"
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"a killed worker's task processes must not run on as orphans: {alive}"


def test_sandboxes_are_removed_after_the_task(run_command, tmp_path):
    run_command("/bin/true")
    run_command("/bin/true > left-behind.txt", files={"in.txt": b"x"})  # through the shell, files left behind
    assert wait_until(lambda: os.listdir(tmp_path / "work") == [], timeout=10)
