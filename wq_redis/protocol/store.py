"""Every Redis call of wq-redis: the manager and the worker talk to Redis only through here.

The atomic steps of a task's life (submit, claim, renew, complete, release, reap,
retrieve, cancel, stats) are Lua scripts in ``scripts/``, loaded once with
``register_script`` (EVALSHA, re-sent transparently after a Redis restart).
"""

from __future__ import annotations

import enum
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from typing import Any

import redis
from redis._parsers import Encoder
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer, PythonRespSerializer
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:  # else redis-py, and so this module, packs in Python
    import hiredis

from . import gcpause, packing
from .codes import Result
from .fields import (
    BIG,
    BIG_B,
    ERROR_B,
    EXPORTED_WORKER_FIELDS_B,
    FILE_BYTES_UPLOADED_COUNT,
    FILES_UPLOADED_COUNT,
    MEMBER,
    MEMBER_B,
    PACK_CANCELLED_B,
    PACK_COUNT_PREFIX_B,
    PACK_FAILED,
    PACK_RESULTS,
    PACK_SIZE,
    PACK_VALUE_KEYS,
    RESULT_B,
    STATE,
    STATE_B,
    SUBMITTED,
    TOKEN,
    UNFINISHED_STATES_B,
    VALUE,
    VALUE_B,
    VALUE_KEY,
    VALUE_KEY_B,
)
from .keys import TASK, QueueKeys, padded_id

Fields = dict[bytes, bytes]
SUBMIT_CHUNK_TASKS = 500  # tasks per submit.lua call (a call holds Redis while it runs)
SUBMIT_CHUNK_BYTES = 4 << 20  # ... or fewer, when their fields are this large
BIG_VALUE = 64 * 1024  # arguments and return values larger than this never pass through Lua
VALUE_TTL_SECONDS = 7 * 24 * 3600  # a large value whose result was never recorded expires
VALUE_LOST_RESULT = int(Result.OUTPUT_TRANSFER_ERROR)
COMPLETE_BATCH = 256  # results per complete.lua call
COMPLETE_BYTES = 16 * 1024 * 1024  # a call past its first result carries at most this much
BROKEN_WAKE_SECONDS = 60.0  # a wake key of the wrong type is left out of a worker's waits this long


class TaskRefused(ValueError):
    """A value a task needs cannot be loaded: the task fails with this message and
    ``result`` (a ``Result`` code), the worker goes on."""

    result = Result.UNKNOWN


class TaskTooLarge(TaskRefused):
    """A value a task needs is larger than the worker's ``--max-task-bytes``."""

    result = Result.RESOURCE_EXHAUSTION


class KeyUnreadable(TaskRefused):
    """A key a task needs (its function body, a cached input) holds a type it never has:
    another client's garbage."""


def too_large_message(what: str, size: int, limit: int) -> str:
    return f"{what} is {size} bytes, over the {limit} bytes this worker loads (wq-redis worker --max-task-bytes)"


class CommandPacker:
    """Packs commands with hiredis (the fastest packer for our many small arguments),
    except a SET of a large value (arguments and return values over BIG_VALUE): hiredis
    copies every argument into one buffer (a memoryview twice), about 40% of a worker's
    time per 1 MiB result; redis-py's Python packer hands the value to the socket as it is.
    Our scripts' calls (EVALSHA, thousands of arguments for a batch) go to hiredis
    straight, without redis-py's per-argument type check (~0.2 us an argument).
    """

    def __init__(self) -> None:
        self._python = PythonRespSerializer(BIG_VALUE, Encoder("utf-8", "strict", False).encode)
        self._fast = HiredisRespSerializer() if HIREDIS_AVAILABLE else self._python

    def pack(self, *args: Any) -> list[bytes | memoryview]:
        command = args[0]
        if command == "EVALSHA" and HIREDIS_AVAILABLE:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:  # a type hiredis does not take: redis-py's path says which
                pass
        elif (
            command == "SET" and len(args) > 2 and isinstance(args[2], (bytes, memoryview)) and len(args[2]) > BIG_VALUE
        ):
            return self._python.pack(*args)
        return self._fast.pack(*args)


def connect(url: str, **kwargs: Any) -> redis.Redis:
    """A binary-safe client that reconnects with exponential backoff on dropped connections."""
    return redis.Redis.from_url(url, **{**connect_options(), **kwargs})


def connect_options() -> dict[str, Any]:
    """The client options of every connection we open (see ``connect``)."""
    return dict(
        command_packer=CommandPacker(),
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        # longer than any blocking call we make (at most 5 s), short enough that a
        # partition is noticed instead of hanging until TCP gives up
        socket_timeout=30,
        socket_connect_timeout=10,
        socket_keepalive=True,
        health_check_interval=30,
    )


_INCLUDE = re.compile(r"^--#include (\w+)$", re.MULTILINE)


def script_source(name: str) -> str:
    """The Lua source of ``scripts/NAME.lua`` with its ``--#include FRAGMENT`` lines replaced
    by ``scripts/include/FRAGMENT.lua``: logic that several scripts share (reporting keys of
    the wrong type, reading counts) is written once."""
    scripts = importlib_resources.files("wq_redis.protocol").joinpath("scripts")
    source = scripts.joinpath(f"{name}.lua").read_text()
    return _INCLUDE.sub(
        lambda found: scripts.joinpath("include", f"{found.group(1)}.lua").read_text().rstrip("\n"), source
    )


def _load_script(client: redis.Redis, name: str) -> Any:
    return client.register_script(script_source(name))


def _wrong_type(error: Exception) -> bool:
    return str(error).startswith("WRONGTYPE")


def _flat_to_dict(flat: Sequence[bytes]) -> Fields:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _value_beside(
    fields: dict[str, Any], key: str, calls: list[tuple[str, list[str], list[Any]]]
) -> tuple[dict[str, Any], bool]:
    """Result ``fields`` whose return value over BIG_VALUE goes to ``key`` by a plain SET
    just before the script, in the same pipeline (a memoryview as the worker's child sent
    it, never copied; Lua would copy it twice): "vk" names it, and complete.lua deletes it
    if the result is refused.  Also whether it did."""
    value = fields.get(VALUE)
    if not isinstance(value, (bytes, memoryview)) or len(value) <= BIG_VALUE:
        return fields, False
    calls.append(("set", [key], [value, VALUE_TTL_SECONDS]))
    fields = {name: v for name, v in fields.items() if name != VALUE}
    fields[VALUE_KEY] = key
    return fields, True


def _broken(rows: Sequence[Sequence[bytes]]) -> list[tuple[str, str]]:
    return [(key.decode(errors="replace"), error.decode(errors="replace")) for key, error in rows]


def _tasks_by_worker(running: Sequence[Sequence[Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker, _, tasks in running:
        counts[worker.decode()] = counts.get(worker.decode(), 0) + int(tasks)
    return counts


def _counters(flat: Sequence[bytes]) -> dict[str, int]:
    """The stats hash's counters, without the pack_* bookkeeping the scripts fold in."""
    return {
        name.decode(errors="replace"): int(v)
        for name, v in _flat_to_dict(flat).items()
        if not name.startswith(PACK_COUNT_PREFIX_B) and v.lstrip(b"-").isdigit()
    }  # another client's junk: skipped


class QueueStateLost(Exception):
    """submit.lua queued nothing: the queue's incarnation is not the one the manager
    attached to (``seen``: the one found, None when missing), so Redis lost the queue's
    state, and with it the functions and files the manager stored.  The manager attaches
    again and resubmits what it holds (recovery.py)."""

    def __init__(self, seen: str | None) -> None:
        super().__init__(
            f"Redis lost the queue's state (its incarnation is {'missing' if seen is None else repr(seen)}): "
            "nothing was queued; the manager attaches again and resubmits the tasks it holds"
        )
        self.seen = seen


@dataclass
class Submitted:
    """What submit.lua did with a batch of rows."""

    queued: int = 0  # tasks queued (a re-sent task already in Redis is not queued again)
    replaced: list[int] = field(default_factory=list)  # ids whose hash held a stranger's data, replaced
    lost: QueueStateLost | None = None  # set when (part of) the batch was refused: nothing of that part queued

    @classmethod
    def of(cls, calls: Sequence[tuple[str, list[str], list[Any]]], answers: Sequence[Any]) -> Submitted:
        """The submit.lua answers among a pipeline's, folded into one (the other calls skipped)."""
        done = cls()
        for call, answer in zip(calls, answers):
            if call[0] == "submit":
                done.add(answer)
        return done

    def add(self, answer: Sequence[Any]) -> None:
        """Fold in one submit.lua answer."""
        if int(answer[0]) == 1:
            self.queued += int(answer[1])
            self.replaced += [int(i) for i in answer[2]]
        elif self.lost is None:
            seen = answer[1]
            self.lost = QueueStateLost(seen.decode(errors="replace") if seen else None)


class Delivery(enum.Enum):
    """What became of a result a worker delivered (complete.lua's answer); true only when
    it was recorded.  The other three say why it was dropped, for a log that tells the truth."""

    RECORDED = 1
    LEASE_LOST = 0  # another attempt holds the task now
    TASK_GONE = -1  # the task is no longer in Redis: cancelled, or finished elsewhere and retrieved
    QUEUE_LOST = -2  # nor is the queue's incarnation: Redis lost the queue's state
    RETRY = 2  # not recorded now: a key it writes holds the wrong type (nothing written; send again)

    def __bool__(self) -> bool:
        return self is Delivery.RECORDED

    @property
    def reason(self) -> str:
        """Why a result was dropped, as a worker logs it."""
        return {
            Delivery.RECORDED: "it was recorded",
            Delivery.LEASE_LOST: "its lease was lost (the task was given to another attempt)",
            Delivery.TASK_GONE: "the task no longer exists in Redis (cancelled, or another attempt "
            "finished it and the manager retrieved it)",
            Delivery.QUEUE_LOST: "the task no longer exists in Redis, nor does its queue's state "
            "(Redis lost its data; the manager resubmits the tasks it holds)",
            Delivery.RETRY: "a key it writes holds the wrong type (held, and sent again)",
        }[self]


@dataclass
class Claimed:
    """One task a worker now holds a lease on."""

    task_id: int
    token: str
    member: str
    fields: Fields
    follows: bool = False  # runs after the task claimed before it, on that task's resources
    refused: str = (
        ""  # why the worker must fail it unloaded (over --max-task-bytes, unreadable); fields are then its small ones
    )
    refused_code: int = 0  # the result code of that failure (codes.Result)


@dataclass
class Snapshot:
    """Raw state of a queue for stats: waiting per ``CLASS|TAG``, counters, live workers."""

    waiting: dict[str, int]
    running: int
    with_results: int
    counters: dict[str, int]
    workers: dict[str, Fields]
    running_tasks: list[tuple[str, str]]  # (worker, member "CLASS|TAG") per running task (or pack)
    running_by_worker: dict[str, int] = field(default_factory=dict)  # worker -> tasks (a pack's members each)
    broken: list[tuple[str, str]] = field(default_factory=list)  # (key, error) it could not read, skipped


@dataclass
class ExportSnapshot:
    """What ``wq-redis exporter`` reads of one queue at scrape time (export.lua)."""

    now_us: int  # Redis time
    waiting: dict[str, tuple[int, int]]  # "CLASS|TAG" -> (tasks, oldest submit time us or -1)
    running: dict[str, int]  # "CLASS|TAG" -> running tasks
    counters: dict[str, int]
    workers: dict[str, tuple[int, int, Fields]]  # name -> (last heartbeat ms, leases held, record fields)
    finished: int  # tasks waiting for retrieval
    result_bytes: int  # of the sampled finished tasks
    sampled: int
    broken: list[tuple[str, str]] = field(default_factory=list)  # (key, error) it could not read, skipped


def find_queues(client: redis.Redis, count: int = 1000) -> list[str]:
    """Names of the queues on this Redis: those with counters or workers (SCAN, never KEYS)."""
    names: set[str] = set()
    for suffix, kind in (("stats", "hash"), ("workers", "zset")):
        for key in client.scan_iter(match=f"wq:{{*}}:{suffix}", count=count, _type=kind):
            text = key.decode() if isinstance(key, bytes) else key
            if text.startswith("wq:{") and text.endswith("}:" + suffix):
                names.add(text[4 : -len(suffix) - 2])
    return sorted(names)


class QueueStore:
    """Redis operations of one queue."""

    SCRIPTS = (
        "submit",
        "claim",
        "renew",
        "complete",
        "release",
        "reap",
        "retrieve",
        "cancel",
        "stats",
        "export",
        "attach",
        "reserve",
    )

    def __init__(self, client: redis.Redis, queue: str, one_thread: bool = False) -> None:
        """``one_thread``: only one thread ever uses this store; its round trips then keep
        one connection of their own instead of taking one from the pool each time (which
        polls the socket: a system call per round trip)."""
        self.client = client
        self.keys = QueueKeys(queue)
        self._scripts = {name: _load_script(client, name) for name in self.SCRIPTS}
        self._scripts_loaded = False  # in Redis: loaded before the first pipeline
        self._one_thread = one_thread
        self._own: Any = None  # that connection, once made
        self._broken_wake: dict[str, float] = {}  # wake keys of the wrong type -> when found (monotonic)

    def _call_many(self, name: str, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run one script many times in one pipeline (one round trip)."""
        return self._pipeline([(name, keys, args) for keys, args in calls])

    def _pipeline(
        self,
        calls: Sequence[tuple[str, list[str], list[Any]]],
        early: tuple[int, Callable[[list[Any]], None]] | None = None,
    ) -> list[Any]:
        """Run scripts in one pipeline (one round trip); answers in order.

        Sends EVALSHA directly: redis-py's pipelines would first ask SCRIPT EXISTS, a second
        round trip on every call.  Every script is loaded before this store's first
        pipeline, so that none of its calls finds its script missing while a later one runs
        (a retrieve answered before the submit it was sent after).  Calls answered NOSCRIPT
        all the same (Redis restarted or flushed its scripts) did not run: every script is
        loaded again, and those calls are sent again with the retrieves after them (a
        retrieve is safe to repeat; the others did not depend on them).

        ``early``: (n, callback) calls back with the first n answers as soon as they are read
        (on the first try only), while later calls may still block.
        """
        if not self._scripts_loaded:
            self._load_scripts()
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):
            commands = []
            for index in todo:
                name, keys, args = calls[index]
                if name == "set":  # a large value, beside a script that refers to it
                    commands.append(("SET", keys[0], args[0], "EX", args[1]))
                elif name == "blpop":  # an idle worker waits, then its claim runs at once
                    commands.append(("BLPOP", *keys, args[0]))
                else:
                    commands.append(("EVALSHA", self._scripts[name].sha, len(keys), *keys, *args))
            answers = self._round_trip(commands, early if len(todo) == len(calls) else None)
            retry = []
            for index, answer in zip(todo, answers):
                if isinstance(answer, redis.exceptions.NoScriptError):
                    retry.append(index)
                elif isinstance(answer, redis.ResponseError) and calls[index][0] == "blpop" and _wrong_type(answer):
                    results[index] = answer  # a wake key of the wrong type: the calls after it still count
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    results[index] = answer
            if not retry:
                return results
            self._load_scripts()
            todo = [index for index in todo if index in retry or (index > retry[0] and calls[index][0] == "retrieve")]
        raise RuntimeError("scripts could not be loaded into Redis")

    def _round_trip(
        self, commands: list[tuple[Any, ...]], early: tuple[int, Callable[[list[Any]], None]] | None = None
    ) -> list[Any]:
        """Send ``commands`` at once and read their answers (an error reply is its
        exception, in its place).  What redis-py's pipeline does, without the per-command
        bookkeeping that was a fifth of a task's Python on each side of a round trip:
        our calls need no response callbacks.  A dropped connection is retried as the
        client's retry policy says, on a fresh connection, with every command again (each
        of ours is safe to repeat: see the scripts' headers)."""
        pool = self.client.connection_pool
        conn = self._own if self._own is not None else pool.get_connection()
        if self._one_thread:
            self._own = conn

        def send_and_read() -> list[Any]:
            conn.send_packed_command(conn.pack_commands(commands))
            answers: list[Any] = []
            for _ in commands:
                if early is not None and len(answers) == early[0]:
                    early[1](answers)
                try:
                    answers.append(conn.read_response())
                except redis.ResponseError as exc:
                    answers.append(exc)
            return answers

        try:
            return conn.retry.call_with_retry(send_and_read, lambda _error: conn.disconnect())
        except BaseException:
            conn.disconnect()  # answers may be left unread: never use this socket again
            raise
        finally:
            if conn is not self._own:
                pool.release(conn)

    def _load_scripts(self) -> None:
        """Load every script (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for script in self._scripts.values():
            pipe.script_load(script.script)
        for script, sha in zip(self._scripts.values(), pipe.execute()):
            script.sha = sha
        self._scripts_loaded = True

    # -- manager side --------------------------------------------------------------
    def attach(self, new_token: str, highest_id: int) -> tuple[str, bool]:
        """The queue's incarnation (``new_token`` if it had none: a new queue, or one whose
        state Redis lost), with the id counter moved past ``highest_id``; also whether tasks
        may be outstanding in it (see attach.lua)."""
        k = self.keys
        token, busy = self._scripts["attach"](
            keys=[k.incarnation, k.seq, k.stats, k.done, k.retrieving], args=[new_token, highest_id]
        )
        return token.decode(), bool(busy)

    def unfinished_tasks(self, count: int = 1000) -> dict[int, Fields]:
        """Task hashes of this queue that are waiting, running or finished but not
        retrieved (state 1, 2 or 3 as the scripts write it), by id: state, queue member and,
        for a pack, its members' ids and cancels.  A SCAN of the whole database (never
        KEYS): for a manager re-attaching to its queue, once."""
        k = self.keys
        pattern = re.compile(re.escape(k.prefix + TASK) + r"(\d+)$")
        ids = []
        for key in self.client.scan_iter(match=k.prefix + TASK + "*", count=count, _type="hash"):
            found = pattern.match(key.decode() if isinstance(key, bytes) else key)
            if found:
                ids.append(int(found.group(1)))
        out: dict[int, Fields] = {}
        for first in range(0, len(ids), count):
            chunk = ids[first : first + count]
            pipe = self.client.pipeline(transaction=False)
            for task_id in chunk:
                pipe.hmget(k.task(task_id), [STATE, MEMBER, PACK_SIZE])
            for task_id, (state, member, members) in zip(chunk, pipe.execute()):
                if state in UNFINISHED_STATES_B and member is not None:
                    out[task_id] = {STATE_B: state, MEMBER_B: member}
                    if members is not None:
                        out[task_id][packing.MEMBERS] = members
        packs = [task_id for task_id, fields in out.items() if packing.MEMBERS in fields]
        for first in range(0, len(packs), count):
            chunk = packs[first : first + count]
            pipe = self.client.pipeline(transaction=False)
            for task_id in chunk:
                pipe.hgetall(k.task(task_id))
            for task_id, fields in zip(chunk, pipe.execute()):
                out[task_id] = {
                    name: value
                    for name, value in fields.items()
                    if name in (STATE_B, MEMBER_B, packing.MEMBERS, packing.ARGS, PACK_CANCELLED_B)
                    or name.startswith(packing.CANCELLED)
                }
        return out

    def reserve_ids(self, count: int, above: int = 0) -> range:
        """Reserve a block of task ids in one round trip, all greater than ``above`` (the
        highest id the caller holds: see reserve.lua)."""
        last = int(self._scripts["reserve"](keys=[self.keys.seq], args=[count, above]))
        return range(last - count + 1, last + 1)

    def put_functions(self, functions: dict[str, bytes], ttl_seconds: int) -> None:
        """Store function bodies by digest; the TTL (refreshed by each manager that submits
        with them) keeps Redis from filling up with functions nobody uses any more."""
        if functions:
            pipe = self.client.pipeline(transaction=False)
            for digest, body in functions.items():
                pipe.set(self.keys.function(digest), body, nx=True, ex=ttl_seconds)
                pipe.expire(self.keys.function(digest), ttl_seconds)
            pipe.execute()

    def refresh_files(self, digests: Sequence[str], ttl_seconds: int) -> list[bool]:
        """Extend the TTL of stored cached inputs; False where one is missing (upload it)."""
        pipe = self.client.pipeline(transaction=False)
        for digest in digests:
            pipe.expire(self.keys.file(digest), ttl_seconds)
        return [bool(found) for found in pipe.execute()]

    def put_files(self, bodies: dict[str, bytes], ttl_seconds: int) -> list[str]:
        """Store cached inputs by digest (once: SET NX); returns the digests that were new,
        counted in the queue's ``files_uploaded``/``file_bytes_uploaded`` counters."""
        if not bodies:
            return []
        pipe = self.client.pipeline(transaction=False)
        for digest, body in bodies.items():
            pipe.set(self.keys.file(digest), body, nx=True, ex=ttl_seconds)
        stored = [d for d, new in zip(bodies, pipe.execute()) if new]
        if stored:
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(self.keys.stats, FILES_UPLOADED_COUNT, len(stored))
            pipe.hincrby(self.keys.stats, FILE_BYTES_UPLOADED_COUNT, sum(len(bodies[d]) for d in stored))
            pipe.execute()
        return stored

    def set_category(self, category: str, resources_json: str) -> None:
        self.client.hset(self.keys.categories, category, resources_json)

    def submit(self, tasks: Iterable[tuple[int, str, float, dict[str, Any]]], incarnation: str) -> Submitted:
        """Queue tasks in one round trip: (id, member "CLASS|TAG", priority, hash fields),
        in the queue ``incarnation`` the manager attached to.

        One submit.lua call per chunk of tasks (not one per task), all in one pipeline;
        says how many were new (a re-sent task already in Redis is not queued again) and
        which ids held a stranger's hash (replaced).  Raises ``QueueStateLost`` when the
        queue's incarnation is another: nothing of those calls was queued."""
        calls = self._submit_calls(tasks, incarnation)
        done = Submitted.of(calls, self._pipeline(calls) if calls else [])
        if done.lost is not None:
            raise done.lost
        return done

    def _submit_calls(
        self, tasks: Iterable[tuple[int, str, float, dict[str, Any]]], incarnation: str
    ) -> list[tuple[str, list[str], list[Any]]]:
        k = self.keys
        calls: list[tuple[str, list[str], list[Any]]] = []
        chunk: list[tuple[int, str, float, dict[str, Any]]] = []
        size = 0
        for row in tasks:
            task_id, member, priority, fields = row
            big = {name: v for name, v in fields.items() if isinstance(v, bytes) and len(v) > BIG_VALUE}
            if big:
                # each a string key of its own, SET just before the script in the same
                # pipeline: Redis keeps a SET's buffer as it came (a 1 MiB HSET copied it,
                # ~0.5 ms), and Lua never copies them.  "big" names them; should the
                # manager die before the script, the orphans expire.
                for name, value in big.items():
                    calls.append(("set", [k.big_field(task_id, name)], [value, VALUE_TTL_SECONDS]))
                fields = {BIG: "\n".join(big), **{name: v for name, v in fields.items() if name not in big}}
                row = (task_id, member, priority, fields)
            chunk.append(row)
            size += sum(len(v) for v in fields.values() if isinstance(v, (bytes, str)))
            if len(chunk) >= SUBMIT_CHUNK_TASKS or size >= SUBMIT_CHUNK_BYTES:
                calls.append(self._submit_call(chunk, incarnation))
                chunk, size = [], 0
        if chunk:
            calls.append(self._submit_call(chunk, incarnation))
        return calls

    def _submit_call(
        self, rows: Sequence[tuple[int, str, float, dict[str, Any]]], incarnation: str
    ) -> tuple[str, list[str], list[Any]]:
        k = self.keys
        members: dict[str, int] = {}
        task_keys = []
        task_args: list[Any] = []
        for task_id, member, priority, fields in rows:
            index = members.get(member)
            if index is None:
                index = members[member] = len(members) + 1
            task_keys.append(k.task(task_id))
            # "sub" (wire.encode_task) tells this task's own earlier write from a stranger's hash
            task_args += (
                index,
                repr(-float(priority)) if priority else "0",
                padded_id(task_id),
                fields.get(PACK_SIZE, 1),
                fields[SUBMITTED],
                len(fields),
            )
            for item in fields.items():
                task_args += item
        keys = [k.registry, k.new_queue_wake, k.stats, k.incarnation, k.done_wake]
        for member in members:
            keys += (k.ready(member), k.wake(member), k.fifo(member))
        return "submit", keys + task_keys, [incarnation, len(members), *members, *task_args]

    def retrieve(
        self,
        max_tasks: int,
        keep_seconds: int,
        acked: Sequence[int],
        block: float = 0.0,
        submit: Sequence[tuple[int, str, float, dict[str, Any]]] = (),
        released: Sequence[int] = (),
        read_packs: bool = True,
        incarnation: str = "",
    ) -> tuple[list[tuple[int, int, Fields]], str | None, Submitted]:
        """Acknowledge ``acked`` (their life in Redis ends), release ``released`` (taken, but
        not the manager's: only out of the in-flight set) and take up to ``max_tasks`` more
        finished tasks, as (id to acknowledge, task id, fields): a pack's members share the
        pack's id to acknowledge (``read_packs=False``: a pack comes back as one failed task,
        none of its members read; see ``packing.unread``).  Also the queue's incarnation
        (None: Redis lost the queue's state, see attach.lua), and what became of ``submit``
        (its ``lost`` set, instead of raised, when submit.lua refused it: the caller
        resubmits it with everything it holds).

        One round trip for all of: queue the tasks ``submit`` in ``incarnation`` (see
        ``submit``); with
        ``block``, wait up to that many seconds for a completion to ring the manager's wake
        key (BLPOP; the script runs once it answers); then the retrieve script."""
        k = self.keys
        calls = self._submit_calls(submit, incarnation)
        if block > 0:
            calls.append(("blpop", [k.done_wake], [max(block, 0.001)]))
        calls.append(
            (
                "retrieve",
                [k.done, k.stats, k.retrieving, k.incarnation],
                [k.prefix, max_tasks, keep_seconds, len(acked), *acked, *released],
            )
        )
        answers = self._pipeline(calls)
        submitted = Submitted.of(calls, answers)
        rows, found = answers[-1]
        tasks = []
        with gcpause.paused():  # thousands of small dicts, no cycle among them
            for task_id, flat in rows:
                fields = _flat_to_dict(flat)
                if packing.MEMBERS in fields:
                    if not read_packs:
                        tasks.append((int(task_id), int(task_id), packing.unread(int(task_id), fields)))
                        continue
                    tasks += [
                        (int(task_id), member_id, member)
                        for member_id, member in packing.member_rows(int(task_id), fields)
                    ]
                else:
                    tasks.append((int(task_id), int(task_id), fields))
        big = [fields for _, _, fields in tasks if VALUE_KEY_B in fields]
        if big:  # large return values, stored beside their tasks: plain GETs, one round trip
            pipe = self.client.pipeline(transaction=False)
            for fields in big:
                pipe.get(fields[VALUE_KEY_B])
            for fields, value in zip(big, pipe.execute()):
                if value is not None:
                    fields[VALUE_B] = value
                else:
                    fields[RESULT_B] = b"%d" % VALUE_LOST_RESULT
                    fields[ERROR_B] = b"the task's return value expired from Redis before it was retrieved"
        return tasks, found.decode(errors="replace") if found else None, submitted

    def wait_done(self, timeout: float) -> None:
        """Block until a completion rings the manager's wake key, or ``timeout`` passes."""
        self.client.blpop([self.keys.done_wake], timeout=max(timeout, 0.001))

    def cancel(self, requests: Sequence[tuple[int, int | None]]) -> list[Fields | None]:
        """Cancel (task id, None) whole, or (pack id, member id) one member of a pack; per
        request the hash's fields as they were, or None when there was nothing to cancel."""
        k = self.keys
        answers = self._call_many(
            "cancel",
            [([k.task(i), k.leases, k.done, k.stats], [k.prefix, i, "" if m is None else m]) for i, m in requests],
        )
        return [_flat_to_dict(flat) if flat else None for flat in answers]

    def ids_with_tag(self, tag: str) -> list[int]:
        """Ids of waiting and running tasks carrying ``tag`` (queues are partitioned by tag)."""
        k = self.keys
        members = [m.decode() for m in self.client.smembers(k.registry)]
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            if member.partition("|")[2] == tag:
                pipe.zrange(k.ready(member), 0, -1)
                pipe.lrange(k.fifo(member), 0, -1)
        ids = [int(i) for batch in pipe.execute() for i in batch]
        running = [int(i) for i in self.client.zrange(k.leases, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for task_id in running:
            pipe.hget(k.task(task_id), MEMBER)
        for task_id, member in zip(running, pipe.execute()):
            if member is not None and member.decode().partition("|")[2] == tag:
                ids.append(task_id)
        return ids

    def task_hash(self, task_id: int) -> Fields:
        """A task's hash with its large fields, as a claim gives it."""
        task = Claimed(task_id, "", "", self.client.hgetall(self.keys.task(task_id)))
        self._read_big_fields([task])
        return task.fields

    def task_fields(self, task_id: int, *names: str) -> list[bytes | None]:
        return self.client.hmget(self.keys.task(task_id), list(names))

    def snapshot(self, worker_timeout_ms: int) -> Snapshot:
        k = self.keys
        queues, running, with_results, counters, workers, running_tasks, broken = self._read_only(
            "stats",
            [k.registry, k.leases, k.done, k.stats, k.workers],
            [k.prefix, worker_timeout_ms, time.time_ns() // 1000],
        )
        return Snapshot(
            waiting={m.decode(): int(n) for m, n in queues},
            running=int(running),
            with_results=int(with_results),
            counters=_counters(counters),
            workers={name.decode(): _flat_to_dict(flat) for name, flat in workers},
            running_tasks=[(w.decode(), m.decode()) for w, m, _ in running_tasks],
            running_by_worker=_tasks_by_worker(running_tasks),
            broken=_broken(broken),
        )

    def export_snapshot(self, levels: int = 16, sample: int = 1000) -> ExportSnapshot:
        k = self.keys
        now_us, waiting, running, counters, workers, finished, result_bytes, sampled, broken = self._read_only(
            "export",
            [k.registry, k.leases, k.done, k.stats, k.workers, k.retrieving],
            [k.prefix, levels, sample, time.time_ns() // 1000],
        )
        return ExportSnapshot(
            now_us=int(now_us),
            waiting={m.decode(): (int(n), int(oldest)) for m, n, oldest in waiting},
            running={m.decode(): int(n) for m, n in running},
            counters=_counters(counters),
            workers={
                w[0].decode(): (
                    int(float(w[1])),
                    int(w[2]),
                    dict(zip(EXPORTED_WORKER_FIELDS_B, w[3:])),
                )
                for w in workers
            },
            finished=int(finished),
            result_bytes=int(result_bytes),
            sampled=int(sampled),
            broken=_broken(broken),
        )

    def _read_only(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """A read-only script (flagged ``no-writes``) by EVALSHA_RO: a user with read-only
        access to the queue's keys may run it (EVALSHA counts its keys as written), and a
        replica serves it.  Not loaded yet (or Redis restarted): EVAL_RO, which loads it,
        so such a user needs no SCRIPT LOAD either."""
        script = self._scripts[name]
        try:
            return self.client.evalsha_ro(script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self.client.eval_ro(script.script, len(keys), *keys, *args)

    # -- worker side ---------------------------------------------------------------
    def claim(
        self,
        worker: str,
        free: dict[str, int],
        tags: Sequence[str],
        max_tasks: int,
        lease_ms: int,
        token_prefix: str,
        results: Sequence[tuple[int, str, dict[str, Any]]] = (),
        total: dict[str, int] | None = None,
        reserve_after_ms: int = 0,
        followers: int = 0,
        follower_bytes: int = 0,
        wake_on: Sequence[str] | None = None,
        block_seconds: float = 1.0,
        delivered: Callable[[list[Delivery]], None] | None = None,
        max_task_bytes: int = 0,
        on_broken: Callable[[list[tuple[str, str]]], None] | None = None,
    ) -> tuple[list[Claimed], list[str], list[Delivery]]:
        """Deliver finished ``results`` (see ``complete``: per result a ``Delivery``) and
        claim new tasks, in one round trip: the results' resources are free again, so the
        claim may use them.

        Each task taken may bring up to ``followers`` more of its queue (while their bytes
        stay under ``follower_bytes``), to run after it on the same resources
        (``Claimed.follows``): short tasks then cost one claim and one child message per
        batch instead of per task.

        With ``wake_on``, the pipeline starts with a BLPOP on those queues' wake keys (and
        the new-queue and this worker's own), so an idle worker claims the moment work
        arrives, in the same round trip.  ``delivered`` hears whether each result was
        recorded as soon as Redis answers for them, before the block ends.

        A task holding more than ``max_task_bytes`` (0: no cap), or whose large field cannot
        be read, comes back leased and ``refused``, without its large fields: the caller
        fails it.  Keys of this queue that could not be read (a wrong type written by some
        other client) are skipped, the other sub-queues served, and passed to
        ``on_broken`` as (key, error) pairs; a wake key among them is left out of the
        waits for BROKEN_WAKE_SECONDS."""
        k = self.keys
        claim_args = [
            k.prefix,
            worker,
            free["cores"],
            free["memory"],
            free["disk"],
            free["gpus"],
            "\n".join(tags),
            max_tasks,
            lease_ms,
            token_prefix,
        ]
        total = total or free
        claim_args += [
            total["cores"],
            total["memory"],
            total["disk"],
            total["gpus"],
            reserve_after_ms,
            followers,
            follower_bytes,
            max_task_bytes,
        ]
        calls = self._complete_calls(results)
        told: list[bool] = []

        def tell(answers: list[Any]) -> None:
            if delivered is not None and not told and not any(isinstance(a, Exception) for a in answers):
                told.append(True)
                delivered(self._accepted(calls, answers))

        delivering = len(calls)
        names: list[str] = []
        if wake_on is not None:
            names = self._wake_keys([k.wake(m) for m in wake_on] + [k.new_queue_wake, k.worker_wake(worker)])
            if names:
                calls.append(("blpop", names, [max(block_seconds, 0.001)]))
            else:  # every key to wait on is broken: wait here, or the worker would spin
                time.sleep(block_seconds)
        answers = self._pipeline(
            calls + [("claim", [k.registry, k.leases, k.stats], claim_args)],
            early=(delivering, tell) if delivering and delivered is not None else None,
        )
        tell(answers[:delivering])
        claimed, eligible, broken = answers[-1]
        found = self._complete_broken(calls, answers) + _broken(broken)
        if names and isinstance(answers[-2], redis.ResponseError):
            found += self._find_broken_wake(names, answers[-2])
        if found and on_broken is not None:
            on_broken(found)
        tasks = [
            Claimed(
                int(row[0]),
                row[1].decode(),
                row[2].decode(),
                _flat_to_dict(row[3]),
                bool(row[4]),
                row[5].decode() if len(row) > 5 else "",
                int(row[6]) if len(row) > 6 else 0,
            )
            for row in claimed
        ]
        self._read_big_fields(tasks)
        return tasks, [m.decode() for m in eligible], self._accepted(calls, answers)

    def _wake_keys(self, names: list[str]) -> list[str]:
        """``names`` without the wake keys found broken in the last BROKEN_WAKE_SECONDS."""
        if not self._broken_wake:
            return names
        now = time.monotonic()
        for name, when in list(self._broken_wake.items()):
            if now - when > BROKEN_WAKE_SECONDS:
                del self._broken_wake[name]  # perhaps repaired: tried again
        return [name for name in names if name not in self._broken_wake]

    def _find_broken_wake(self, names: list[str], error: Exception) -> list[tuple[str, str]]:
        """A wait answered WRONGTYPE: which of its keys (TYPE, only on this error path)."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.type(name)
        found = []
        for name, kind in zip(names, pipe.execute()):
            if kind not in (b"list", b"none", "list", "none"):
                self._broken_wake[name] = time.monotonic()
                found.append((name, str(error)))
        return found

    def _read_big_fields(self, tasks: Sequence[Claimed]) -> None:
        """Large fields (arguments, input files) kept beside their tasks, named by "big":
        plain GETs, one round trip for all (they never change once submitted).  Keys as
        bytes, as claim.lua measured them: a name is whatever bytes the hash holds."""
        big = [
            (task, name)
            for task in tasks
            if BIG_B in task.fields
            for name in task.fields.pop(BIG_B).split(b"\n")
            if name
        ]
        if not big:
            return
        pipe = self.client.pipeline(transaction=False)
        for task, name in big:
            pipe.get(self.keys.task(task.task_id).encode() + b":" + name)
        for (task, name), value in zip(big, pipe.execute()):
            if value is not None:
                task.fields[name] = value

    def function(self, digest: str, max_bytes: int = 0) -> bytes | None:
        """A function body (None when missing); raises TaskTooLarge over ``max_bytes``."""
        return self._get_capped(self.keys.function(digest), max_bytes, f"function {digest[:12]}")

    def file(self, digest: str, max_bytes: int = 0) -> bytes | None:
        """A cached input's bytes (None once it expired from Redis); raises TaskTooLarge
        over ``max_bytes``."""
        return self._get_capped(self.keys.file(digest), max_bytes, f"cached input {digest[:12]}")

    def _get_capped(self, key: str, max_bytes: int, what: str) -> bytes | None:
        """GET, after a STRLEN when capped (these reads are rare: each worker caches what it
        read), so that nothing over the cap is ever loaded."""
        try:
            if max_bytes > 0:
                size = int(self.client.strlen(key))
                if size > max_bytes:
                    raise TaskTooLarge(too_large_message(what, size, max_bytes))
            return self.client.get(key)
        except redis.ResponseError as exc:
            if not _wrong_type(exc):
                raise
            raise KeyUnreadable(
                f"{what} cannot be read: {key} holds another type ({exc}); delete or repair that key"
            ) from None

    def ring_worker(self, worker: str) -> None:
        key = self.keys.worker_wake(worker)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, 0)
        pipe.execute()

    def complete(
        self,
        results: Sequence[tuple[int, str, dict[str, Any]]],
        on_broken: Callable[[list[tuple[str, str]]], None] | None = None,
    ) -> list[Delivery]:
        """Record results in one round trip; per result, whether it was (or why not:
        ``Delivery.RETRY`` where a key it writes holds the wrong type and nothing of it was
        written: hold it and send it again).  Those keys go to ``on_broken`` as (key,
        error) pairs."""
        calls = self._complete_calls(results)
        answers = self._pipeline(calls)
        found = self._complete_broken(calls, answers)
        if found and on_broken is not None:
            on_broken(found)
        return self._accepted(calls, answers)

    def _complete_calls(
        self, results: Sequence[tuple[int, str, dict[str, Any]]]
    ) -> list[tuple[str, list[str], list[Any]]]:
        """complete.lua calls for ``results``: many tasks per call, split so that no call
        carries more than COMPLETE_BATCH tasks or (past its first task) COMPLETE_BYTES."""
        k = self.keys
        fixed = [k.leases, k.done, k.done_wake, k.stats, k.incarnation]
        calls: list[tuple[str, list[str], list[Any]]] = []
        keys: list[str] = []
        args: list[Any] = []
        size = 0
        for task_id, token, fields in results:
            if keys and (len(keys) >= COMPLETE_BATCH or size >= COMPLETE_BYTES):
                calls.append(("complete", fixed + keys, args))
                keys, args, size = [], [], 0
            fields, _ = _value_beside(fields, k.value(token), calls)
            if PACK_FAILED in fields:  # a pack's members' results (packing.pack_results)
                fields = self._member_values(fields, token, calls)
            keys.append(k.task(task_id))
            args += (task_id, token, 2 * len(fields))
            for name, value in fields.items():
                args += (name, value)
                if isinstance(value, (bytes, memoryview)):
                    size += len(value)
        if keys:
            calls.append(("complete", fixed + keys, args))
        return calls

    def _member_values(
        self, fields: dict[str, Any], token: str, calls: list[tuple[str, list[str], list[Any]]]
    ) -> dict[str, Any]:
        """A pack's result fields with its members' results as one value; a member's large
        return value is stored beside (a SET before the script, as for a task's "vk"),
        named in "vks"."""
        members = []
        stored = []
        for member_id, member in fields[PACK_RESULTS]:
            member, beside = _value_beside(member, self.keys.value(f"{token}:{member_id}"), calls)
            if beside:
                stored.append(member[VALUE_KEY])
            members.append((member_id, packing.result_value(member)))
        out = {**fields, PACK_RESULTS: packing.dump(members)}
        if stored:
            out[PACK_VALUE_KEYS] = "\n".join(stored)
        return out

    @staticmethod
    def _accepted(calls: Sequence[tuple[str, list[str], list[Any]]], answers: Sequence[Any]) -> list[Delivery]:
        """Per result, what complete.lua did with it (answers of the other calls skipped)."""
        return [Delivery(a) for call, answer in zip(calls, answers) if call[0] == "complete" for a in answer[0]]

    @staticmethod
    def _complete_broken(
        calls: Sequence[tuple[str, list[str], list[Any]]], answers: Sequence[Any]
    ) -> list[tuple[str, str]]:
        """The keys complete.lua calls found of the wrong type (answers not come yet skipped)."""
        return [
            pair
            for call, answer in zip(calls, answers)
            if call[0] == "complete" and answer
            for pair in _broken(answer[1])
        ]

    def renew(
        self,
        worker: str,
        status: str,
        held: dict[int, str],
        lease_ms: int,
        on_broken: Callable[[list[tuple[str, str]]], None] | None = None,
    ) -> tuple[list[int], bool]:
        """Heartbeat and lease renewal in one call: the ids whose lease this worker lost, and
        whether its record is still there (False after a reaper gave it up for dead, or
        when its key holds another type: registering again replaces it).  Keys of the
        wrong type go to ``on_broken`` as (key, error) pairs."""
        k = self.keys
        args: list[Any] = [k.prefix, lease_ms, worker, status]
        for task_id, token in held.items():
            args += (task_id, token)
        lost, registered, broken = self._scripts["renew"](keys=[k.leases, k.workers, k.worker(worker)], args=args)
        if broken and on_broken is not None:
            on_broken(_broken(broken))
        return [int(i) for i in lost], bool(registered)

    def leases_with_prefix(self, prefix: str) -> dict[int, str]:
        """The tasks leased now with a token that starts with ``prefix``, by id (one scan
        of the leases: for the rare moments a worker must find what a dead child held)."""
        ids = self.client.zrange(self.keys.leases, 0, -1)
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(self.keys.task(int(task_id)), TOKEN)
        found = {}
        for task_id, token in zip(ids, pipe.execute()):
            if token and token.decode().startswith(prefix):
                found[int(task_id)] = token.decode()
        return found

    def release(self, held: dict[int, str]) -> None:
        k = self.keys
        self._call_many("release", [([k.task(i), k.leases], [i, token]) for i, token in held.items()])

    def reap(self, lock_ms: int, worker_timeout_ms: int, force: bool = False) -> list[int] | None:
        """Requeue expired leases if no other worker is reaping now (SET NX PX guard)."""
        k = self.keys
        if not force and not self.client.set(k.reaper_lock, os.getpid(), nx=True, px=lock_ms):
            return None
        result = self._scripts["reap"](
            keys=[k.leases, k.registry, k.done, k.done_wake, k.stats, k.workers, k.new_queue_wake],
            args=[k.prefix, 1000, worker_timeout_ms],
        )
        return [int(x) for x in result]

    def register_worker(self, worker: str, record: dict[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.worker(worker))
        pipe.hset(self.keys.worker(worker), mapping=record)
        pipe.execute()

    def unregister_worker(self, worker: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.keys.workers, worker)
        pipe.delete(self.keys.worker(worker), self.keys.worker_wake(worker))
        pipe.execute()
