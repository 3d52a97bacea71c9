"""Every Redis call of wq-redis: the manager and the worker talk to Redis only through here.

The atomic steps of a task's life (submit, claim, renew, complete, release, reap,
retrieve, cancel, stats) are Lua scripts in ``scripts/``, loaded once with
``register_script`` (EVALSHA, re-sent transparently after a Redis restart).

``QueueStore`` is one queue's store; its calls live by who makes them:
  lua.py            the scripts: names, source (``--#include`` fragments), registering;
  pipeline.py       running them, many calls a round trip (``ScriptPipeline``);
  manager_calls.py  attach, submit, retrieve, cancel, stats (``ManagerCalls``);
  worker_calls.py   claim, complete, renew, release, reap (``WorkerCalls``);
  worker_control.py the manager's requests to workers: exit, blocked hosts (``WorkerControl``);
  answers.py        what they answer (``Claimed``, ``Delivery``, ``Submitted``, ``Snapshot``...);
  packer.py         how commands are packed (``CommandPacker``), connection.py how clients connect.
The names below are the ones the other layers import.
"""

from __future__ import annotations

import redis

from .answers import (
    Claimed,
    Delivery,
    ExportSnapshot,
    Fields,
    KeyUnreadable,
    QueueStateLost,
    Snapshot,
    Submitted,
    TaskRefused,
    TaskTooLarge,
    too_large_message,
)
from .connection import connect, connect_options
from .keys import PARTITION_SEPARATOR
from .lua import SCRIPT_NAMES, script_source
from .manager_calls import WORKER_TIMEOUT_MS, ManagerCalls
from .packer import BIG_VALUE, CommandPacker
from .worker_calls import WorkerCalls
from .worker_control import WorkerControl

__all__ = [
    "BIG_VALUE",
    "WORKER_TIMEOUT_MS",
    "Claimed",
    "CommandPacker",
    "Delivery",
    "ExportSnapshot",
    "Fields",
    "KeyUnreadable",
    "QueueStateLost",
    "QueueStore",
    "Snapshot",
    "Submitted",
    "TaskRefused",
    "TaskTooLarge",
    "connect",
    "connect_options",
    "find_queues",
    "script_source",
    "too_large_message",
]


def find_queues(client: redis.Redis, count: int = 1000) -> list[str]:
    """Names of the queues on this Redis: those with counters (a hash) or workers (a sorted
    set); keys of another type at those names are another client's, not a queue.  SCAN,
    never KEYS.  A sharded queue's partitions (``NAME|i``) are its own, not queues."""
    names: set[str] = set()
    for suffix, kind in (("stats", "hash"), ("workers", "zset")):
        for key in client.scan_iter(match=f"wq:{{*}}:{suffix}", count=count, _type=kind):
            text = key.decode() if isinstance(key, bytes) else key
            if text.startswith("wq:{") and text.endswith("}:" + suffix):
                names.add(text[4 : -len(suffix) - 2].partition(PARTITION_SEPARATOR)[0])
    return sorted(names)


class QueueStore(ManagerCalls, WorkerCalls, WorkerControl):
    """Redis operations of one queue: the manager's calls and the worker's."""

    SCRIPTS = SCRIPT_NAMES
    sharded = False  # the stores of a queue spread over partitions say True (partitions.py)
    shards = 1  # ... and how many partitions (set by those stores)
