"""What a task declares: its resources, files and limits (``TaskSpec``), and the
resources Work Queue reports back (``Resources``).  task.py's ``specify_*`` calls fill a
``TaskSpec`` in; wire.py turns it into hash fields at submit time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .codes import WORK_QUEUE_CACHE


@dataclass
class Resources:
    """Resources of a task as Work Queue reports them (memory and disk in MB, times in s)."""

    cores: float | None = None
    memory: int | None = None
    disk: int | None = None
    gpus: int | None = None
    wall_time: float | None = None
    cpu_time: float | None = None

    @classmethod
    def from_json(cls, data: bytes | None) -> Resources:
        """Resources as a worker recorded them; a value that is not a JSON object of them
        (another client's garbage in the task's hash) reads as unknown, never raises."""
        if not data:
            return cls()
        try:
            values = json.loads(data)
            return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError, AttributeError):
            return cls()


@dataclass
class InputFile:
    local: str | None  # None for a buffer
    remote: str
    cache: bool = False
    data: bytes | None = None  # a buffer's contents
    directory: bool = False  # a tree, packed as tar (see files.py)
    recursive: bool = True  # for a directory: with its contents, or just the empty directory
    source: str | None = None  # a URL the worker fetches, or a command that makes the file (``url`` says which)
    url: bool = False


@dataclass(slots=True)
class TaskSpec:
    """What the user asked for; None means 'the category's value, else the default'.

    Slots, and empty tuples until a file is declared: a manager holds one per task in
    flight, and every container the garbage collector tracks costs it time (four fewer
    per task took a third of the client's time per task of a large submit_many:
    ``python -m bench.profile_wq --phases batch``, i.e. ``make bench-profile``).
    """

    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    gpus: int | None = None
    tag: str | None = None
    category: str = "default"
    priority: float = 0.0
    max_retries: int = 0
    running_time_max: float = 0.0
    running_time_min: int = 0  # seconds a worker with an end (--wall-time) must have left
    end_time: int = 0  # microseconds since the epoch
    env: dict[str, str | None] = field(default_factory=dict)  # untracked while it holds only strings
    inputs: Sequence[InputFile] = ()
    outputs: Sequence[tuple[str, str]] = ()
    output_dirs: Sequence[tuple[str, str]] = ()

    def add(self, name: str, item: Any) -> None:
        """Append to ``inputs``, ``outputs`` or ``output_dirs`` (a list from the first on)."""
        items = getattr(self, name)
        if not isinstance(items, list):
            items = list(items)
            setattr(self, name, items)
        items.append(item)


def non_negative(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if number != value or number < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return number


def cache_flag(flags: int | None, cache: bool | None) -> bool:
    """Work Queue's rule: ``cache`` when given, else the ``WORK_QUEUE_CACHE`` bit of ``flags``."""
    if cache is not None:
        return bool(cache)
    return bool((flags or 0) & WORK_QUEUE_CACHE)


def check_remote(remote: str) -> str:
    """Remote names live inside the task's sandbox: no absolute paths, no '..'."""
    norm = os.path.normpath(remote)
    if os.path.isabs(remote) or norm == ".." or norm.startswith("../"):
        raise ValueError(f"remote file name {remote!r} must be relative and stay inside the sandbox")
    return norm
