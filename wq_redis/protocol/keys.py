"""The Redis key schema of a queue, in one place.

Every key of queue ``NAME`` starts with ``wq:{NAME}:``.  The braces are a Redis Cluster
hash tag: all keys of one queue live in one slot, so every Lua script may touch any of
them and the same code runs on a single Redis, on Sentinel and on Redis Cluster.

The Lua scripts rebuild some of these names from the prefix (taken from their first key,
scripts/include/prefix.lua); the suffixes below are the contract between this module and
``protocol/scripts/*.lua`` (the hashes' field names are ``fields.py``'s).  Change one, change both.
"""

from __future__ import annotations

from dataclasses import dataclass

# Suffixes shared with the Lua scripts.
READY = "ready:"  # ZSET of waiting task ids with a priority, per (resource class, tag), see ready()
FIFO = "fifo:"  # LIST of waiting task ids at priority 0, per (resource class, tag), see fifo()
WAKE = "wake:"  # LIST holding at most one data-free token, see wake()
TASK = "t:"  # HASH of one task, see task()
WORKER = "w:"  # HASH of one worker's record, see worker()
WORKER_WAKE = "ww:"  # LIST a worker rings on itself, see worker_wake()
WORKER_CONTROL = "wc:"  # LIST that wakes a worker's heartbeat, see control()
VALUE = "v:"  # STRING of one attempt's large return value, see value()
FUNCTION = "fn:"  # STRING of one function body, see function()
FILE = "file:"  # STRING of one cached input, see file()
LABEL = "label:"  # HASH of an automatic category's current allocation label, see label()

PARTITION_SEPARATOR = "|"  # refused in queue names: NAME|i is partition i of NAME, never a queue
ID_WIDTH = 12  # task ids are zero-padded in ready sets, so equal priorities sort FIFO


def check_queue_name(name: str) -> str:
    """Reject queue names that would break the key schema or the cluster hash tag."""
    if not isinstance(name, str) or not name:
        raise ValueError("queue name must be a non-empty string")
    bad = set("{}|\n\r\t ") & set(name)
    if bad:
        raise ValueError(f"queue name {name!r} must not contain any of {sorted(bad)!r}")
    return name


def padded_id(task_id: int) -> str:
    """The member string of a task id in a ready ZSET (FIFO among equal priorities)."""
    return str(task_id).zfill(ID_WIDTH)


@dataclass(frozen=True)
class QueueKeys:
    """Names of every Redis key of one queue."""

    name: str
    part: int = 0  # a sharded queue's partition (partitions.py): 0 is the queue's own keys

    def __post_init__(self) -> None:
        check_queue_name(self.name)
        if not isinstance(self.part, int) or self.part < 0:
            raise ValueError(f"partition {self.part!r} must be an int >= 0")

    @property
    def prefix(self) -> str:
        """``wq:{NAME}:``; partition i > 0 of a sharded queue ``wq:{NAME|i}:`` (its own hash
        tag: its own slot, on whichever primary owns it)."""
        if self.part:
            return f"wq:{{{self.name}{PARTITION_SEPARATOR}{self.part}}}:"
        return f"wq:{{{self.name}}}:"

    @property
    def shards(self) -> str:
        """STRING: how many partitions the queue's tasks are kept in (partitions.py); only
        a sharded queue has it, in its partition 0 (written by its manager at attach)."""
        return self.prefix + "shards"

    # -- counters and registries -------------------------------------------------
    @property
    def seq(self) -> str:
        """STRING: last task id handed out (ids are reserved in blocks with INCRBY)."""
        return self.prefix + "seq"

    @property
    def stats(self) -> str:
        """HASH: cumulative counters (submitted, dispatched, retrieved, failed, ...)."""
        return self.prefix + "stats"

    @property
    def registry(self) -> str:
        """SET: the ready-queue members ``CLASS|TAG`` that currently hold tasks."""
        return self.prefix + "queues"

    @property
    def leases(self) -> str:
        """ZSET: running task id -> lease deadline in Redis milliseconds."""
        return self.prefix + "leases"

    @property
    def done(self) -> str:
        """LIST: ids of finished tasks waiting for the manager to retrieve them."""
        return self.prefix + "done"

    @property
    def incarnation(self) -> str:
        """STRING: a random token written once (SET NX) when a manager first attaches to the
        queue, returned by every retrieve and checked by every submit (which queues nothing
        in another one): missing or changed, Redis lost the queue's state, and the manager
        resubmits the tasks it holds (attach.lua, retrieve.lua, submit.lua)."""
        return self.prefix + "incarnation"

    @property
    def retrieving(self) -> str:
        """SET: ids handed to the manager and not yet acknowledged (see retrieve.lua)."""
        return self.prefix + "retrieving"

    @property
    def done_wake(self) -> str:
        """LIST: data-free token rung on completion; the manager blocks on it."""
        return self.prefix + "done:wake"

    @property
    def new_queue_wake(self) -> str:
        """LIST: token rung when a new (class, tag) queue appears; idle workers block on it."""
        return self.prefix + "wake"

    @property
    def workers(self) -> str:
        """ZSET: worker name -> last heartbeat in Redis milliseconds."""
        return self.prefix + "workers"

    @property
    def categories(self) -> str:
        """HASH: category -> JSON of the resources its tasks get when they declare none."""
        return self.prefix + "categories"

    @property
    def blocked_hosts(self) -> str:
        """HASH: host name -> Redis ms until which its workers claim no task of this queue
        ("0": until unblocked).  WorkQueue.block_host writes it; each worker's heartbeat
        (renew.lua) reads its own host's entry."""
        return self.prefix + "blocked"

    @property
    def reaper_lock(self) -> str:
        """STRING: SET NX PX guard so one worker at a time requeues expired leases."""
        return self.prefix + "reaper"

    # -- per-object keys -----------------------------------------------------------
    def task(self, task_id: int | str) -> str:
        """HASH: one task's spec, state, lease token and, once done, its results."""
        return f"{self.prefix}{TASK}{int(task_id)}"

    def big_field(self, task_id: int | str, name: str | bytes) -> str:
        """STRING: one large field of a task (arguments, an input file) kept beside its hash
        (``TASK:NAME``), named in the hash's "big" field and ended with the task."""
        if isinstance(name, bytes):
            name = name.decode()
        return f"{self.task(task_id)}:{name}"

    def ready(self, member: str) -> str:
        """ZSET: waiting ids of one ``CLASS|TAG`` queue with a priority other than 0,
        scored by -priority (padded ids: FIFO among equal priorities)."""
        return self.prefix + READY + member

    def fifo(self, member: str) -> str:
        """LIST: waiting ids of one ``CLASS|TAG`` queue at priority 0 (most tasks), in
        submit order: a list entry costs Redis about 10 bytes, a sorted-set entry 85."""
        return self.prefix + FIFO + member

    def wake(self, member: str) -> str:
        """LIST: data-free token rung when ``CLASS|TAG`` gets tasks."""
        return self.prefix + WAKE + member

    def worker(self, worker_name: str) -> str:
        """HASH: a worker's record (host, resources, in use, tags, started)."""
        return f"{self.prefix}{WORKER}{worker_name}"

    def worker_wake(self, worker_name: str) -> str:
        """LIST: token a worker rings on itself when a local task finishes."""
        return f"{self.prefix}{WORKER_WAKE}{worker_name}"

    def control(self, worker_name: str) -> str:
        """LIST: token that wakes a worker's heartbeat at once (it blocks on it between
        beats): rung by cancel.lua for a task the worker runs, by the manager's requests
        to workers (worker_control.py), and by the worker itself on a signal or at exit."""
        return f"{self.prefix}{WORKER_CONTROL}{worker_name}"

    def value(self, token: str) -> str:
        """STRING: a large return value of one attempt (``token``), kept out of the task's
        hash so that no Lua script copies it (see ``store.BIG_VALUE``)."""
        return f"{self.prefix}{VALUE}{token}"

    def function(self, digest: str) -> str:
        """STRING: a cloudpickled function stored once by its SHA-256."""
        return f"{self.prefix}{FUNCTION}{digest}"

    def file(self, digest: str) -> str:
        """STRING: a cached input (a file, or a directory as tar) stored once by its SHA-256."""
        return f"{self.prefix}{FILE}{digest}"

    def label(self, category_hex: str) -> str:
        """HASH: the allocation of an automatic category (``resources.category_hex`` of its
        name) as its manager last computed it (label.lua), read by claim.lua for the tasks
        of classes ``.k``/``.K`` of that category (see resources.py); fields.py names its
        fields: the label, the results learned and the results done."""
        return f"{self.prefix}{LABEL}{category_hex}"
