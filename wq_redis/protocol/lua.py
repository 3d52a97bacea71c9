"""The Lua scripts: their names, their source with shared fragments included, and
registering them with a client (redis-py's ``Script``: EVALSHA, its SHA-1 computed here)."""

from __future__ import annotations

import re
from importlib import resources as importlib_resources
from typing import Any

import redis

# every script of scripts/ (one per atomic step of a task's life, and the read-only stats)
SCRIPT_NAMES = (
    "submit",
    "claim",
    "renew",
    "complete",
    "release",
    "escalate",
    "label",
    "reap",
    "retrieve",
    "cancel",
    "stats",
    "export",
    "attach",
    "reserve",
    "shutdown",
)

_INCLUDE = re.compile(r"^--#include (\w+)$", re.MULTILINE)


def script_source(name: str) -> str:
    """The Lua source of ``scripts/NAME.lua`` with its ``--#include FRAGMENT`` lines replaced
    by ``scripts/include/FRAGMENT.lua``: logic that several scripts share (reporting keys of
    the wrong type, reading counts) is written once."""
    scripts = importlib_resources.files("wq_redis.protocol").joinpath("scripts")
    source = scripts.joinpath(f"{name}.lua").read_text()
    return _INCLUDE.sub(
        lambda found: scripts.joinpath("include").joinpath(f"{found.group(1)}.lua").read_text().rstrip("\n"), source
    )


def load_script(client: redis.Redis, name: str) -> Any:
    return client.register_script(script_source(name))
