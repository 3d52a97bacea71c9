"""The environment variables a task sees: the slot's (Work Queue's CORES, MEMORY, DISK,
GPUS, the sandbox, the GPUs held), made by the worker and by a child's lane, and a warm
child's changes to its own ``os.environ`` from one message to the next."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...protocol.resources import Request


def slot_environment(allocation: Request, gpu_ids: list[str], sandbox: str) -> dict[str, str | None]:
    """Work Queue's CORES/MEMORY/DISK/GPUS, the sandbox, and the GPUs held."""
    a = allocation
    env: dict[str, str | None] = {
        "CORES": str(a.cores),
        "MEMORY": str(a.memory),
        "DISK": str(a.disk),
        "GPUS": str(a.gpus),
        "WQ_SANDBOX": sandbox,
    }
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    return env


class ProcessEnvironment:
    """The variables the child's messages set in its ``os.environ``, undone when a later
    message no longer names them."""

    def __init__(self) -> None:
        self.env: dict[str, str | None] = {}  # the variables the last message set
        self.original: dict[str, str | None] = {}  # their values before any message

    def use(self, env: dict[str, str | None]) -> None:
        """Make a message's variables the process's: set what changed since the last
        message, and give variables it no longer names their original value.  Messages of
        one slot repeat the same variables, so most messages set none."""
        if env == self.env:
            return
        for name in self.env.keys() - env.keys():
            set_variable(name, self.original[name])
        for name, value in env.items():
            if name not in self.original:
                self.original[name] = os.environ.get(name)
            if name not in self.env or self.env[name] != value:
                set_variable(name, value)
        self.env = dict(env)


def set_variable(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def apply_variables(env: dict[str, str | None]) -> None:
    for name, value in env.items():
        set_variable(name, value)
