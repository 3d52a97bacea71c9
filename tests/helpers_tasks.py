"""Functions the tests run as PythonTasks (importable on the workers: tests/ is on the path)."""

from __future__ import annotations

import os
import time


def my_sum(x, y):
    import math  # noqa: F401  (the seed example imports inside the function)

    return x + y


def timed_sleep(seconds: float) -> tuple[float, float, str]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time(), os.environ.get("WQ_TASK_ID", "")


def fail(message: str) -> None:
    print("about to fail")
    raise ValueError(message)


def env_value(name: str) -> str | None:
    return os.environ.get(name)


def hard_exit(code: int) -> None:
    os._exit(code)


def logged_work(log_path: str, seconds: float, value: int) -> int:
    """Record each execution (task id) in a shared log, then work; counts duplicate runs."""
    with open(log_path, "a") as log:
        log.write(os.environ.get("WQ_TASK_ID", "?") + "\n")
    time.sleep(seconds)
    return value


def busy(seconds: float) -> int:
    """Burn CPU without sleeping (a task that would starve an in-process heartbeat)."""
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        n += 1
    return n


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def batch_probe(i: int) -> tuple[int, str, str, list[str]]:
    """What a task sees of its run: its id, its sandbox, and the files already there (a
    file it leaves behind must not reach the next task of its batch)."""
    before = sorted(os.listdir("."))
    print(f"probe {i}")
    with open("left-behind", "w") as handle:
        handle.write(str(i))
    return i, os.environ.get("WQ_TASK_ID", ""), os.environ.get("WQ_SANDBOX", ""), before


def close_output() -> None:
    """A task that closes the file descriptors its output is captured from (with output
    still buffered)."""
    print("unflushed", end="")
    os.close(1)
    os.close(2)


def crash_on(i: int, bad: int) -> int:
    if i == bad:
        os._exit(3)
    return i


def reversed_bytes(data: bytes) -> bytes:
    return data[::-1]


def sized_probe(i: int, payload: bytes) -> tuple[int, str, int]:
    """Which batch (sandbox) ran item ``i`` and the payload size it received."""
    return i, os.environ.get("WQ_SANDBOX", ""), len(payload)


def member_probe(i: int, mode: str = "") -> object:
    """A short call for the pack tests: prints, and returns its item and task id, fails
    (``mode="raise"``) or returns 200 KiB (``mode="big"``)."""
    print(f"member {i}")
    if mode == "raise":
        raise ValueError(f"member {i} failed")
    if mode == "big":
        return bytes([i % 256]) * (200 * 1024)
    return i, os.environ.get("WQ_TASK_ID", "")


def pid_then_sleep(path: str, seconds: float) -> int:
    """Write this process' pid to ``path``, then sleep: a test can watch (or kill) it."""
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def no_arguments() -> str:
    """A call without arguments (a signed task whose hash has no "args" field)."""
    return "ran"


def unpickle_file(name: str) -> object:
    """A task that trusts its input file: it unpickles it (as user code may)."""
    import pickle

    with open(name, "rb") as handle:
        return pickle.load(handle)
