"""The worker's calls of the store: claim, complete, renew, release, reap, its record,
and loading what a task needs (large fields, function bodies, cached inputs)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT

from . import packing
from .answers import (
    Call,
    Claimed,
    Delivery,
    Fields,
    KeyUnreadable,
    Renewal,
    TaskTooLarge,
    broken_keys,
    flat_to_dict,
    too_large_message,
)
from .connection import LONGEST_WAIT_SECONDS
from .fields import BIG_B, PACK_FAILED, PACK_RESULTS, PACK_VALUE_KEYS, TOKEN, VALUE, VALUE_KEY
from .packer import BIG_VALUE, VALUE_TTL_SECONDS
from .partitions import parse_stored_shards
from .pipeline import ScriptPipeline, wrong_type

COMPLETE_BATCH = 256  # results per complete.lua call
COMPLETE_BYTES = 16 * 1024 * 1024  # a call past its first result carries at most this much
BROKEN_WAIT_SECONDS = 2.0  # a worker whose every wake key is broken claims again this often
BROKEN_WAKE_SECONDS = 60.0  # a wake key of the wrong type is left out of a worker's waits this long


def value_beside(fields: dict[str, Any], key: str, calls: list[Call]) -> tuple[dict[str, Any], bool]:
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


def _time_left_ms(ends_at: float, blocked: float) -> int:
    """claim.lua's ARGV 18: the milliseconds a worker ending at ``ends_at`` has left once
    a block of ``blocked`` seconds is over; 0 for a worker without an end, -1 for one
    whose end comes first (it takes nothing)."""
    if not ends_at:
        return 0
    left = int((ends_at - time.time() - blocked) * 1000)
    return left if left > 0 else -1


class WorkerCalls(ScriptPipeline):
    """What a worker asks of a queue."""

    # queues registered at this store's last claim (-1: none yet): a claim that finds more
    # passes the news on to the idle workers that wait only on the new-queue key (claim.lua)
    _registry_seen: int = -1
    # whether the last claim's wait for work was ended by a wake key (not by its bound):
    # a sharded queue's worker then looks in its other partitions (worker/partitions.py)
    woken: bool = False

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
        ends_at: float = 0.0,
        wake_heartbeat: bool = False,
        known_queues: int = -1,
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
        waits for BROKEN_WAKE_SECONDS.

        A worker that ends at ``ends_at`` (``time.time()``; 0: never, ``--wall-time``)
        takes only tasks that can end before it (claim.lua tells which); the time left is
        counted from the end of the block, the latest the claim can run.

        ``wake_heartbeat``: a claim that takes anything rings the worker's control key
        (its heartbeat waits an idle worker's long period: the busy beats start now).

        ``known_queues``: how many queues the worker knew registered (``registry_seen`` of
        another store of it: a lane's first claim), used until this store's own first claim."""
        k = self.keys
        claim_args = [
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
            _time_left_ms(ends_at, block_seconds if wake_on is not None else 0.0),
            self._registry_seen if self._registry_seen >= 0 else known_queues,
            1 if wake_on is not None else 0,
            1 if wake_heartbeat else 0,
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
                calls.append(("blpop", names, [min(max(block_seconds, 0.001), LONGEST_WAIT_SECONDS)]))
            else:  # every key to wait on is broken: wait here, or the worker would spin (not
                # for a whole idle wait: nothing can ring it, and a local task may finish)
                time.sleep(min(block_seconds, BROKEN_WAIT_SECONDS))
        answers = self._pipeline(
            calls
            + [
                (
                    "claim",
                    [
                        k.registry,
                        k.leases,
                        k.stats,
                        k.blocked_hosts,
                        k.new_queue_wake,
                        k.worker(worker),
                        k.control(worker),
                    ],
                    claim_args,
                )
            ],
            early=(delivering, tell) if delivering and delivered is not None else None,
        )
        tell(answers[:delivering])
        claimed, eligible, broken = answers[-1][:3]
        if len(answers[-1]) > 3:
            self._registry_seen = int(answers[-1][3])
        found = self._complete_broken(calls, answers) + broken_keys(broken)
        self.woken = bool(names) and answers[-2] is not None
        if names and isinstance(answers[-2], redis.ResponseError):
            found += self._find_broken_wake(names, answers[-2])
        if found and on_broken is not None:
            on_broken(found)
        tasks = [
            Claimed(
                int(row[0]),
                row[1].decode(),
                row[2].decode(),
                flat_to_dict(row[3]),
                bool(row[4]),
                row[5].decode() if len(row) > 5 else "",
                int(row[6]) if len(row) > 6 else 0,
            )
            for row in claimed
        ]
        self._read_big_fields(tasks)
        return tasks, [m.decode() for m in eligible], self._accepted(calls, answers)

    @property
    def registry_seen(self) -> int:
        """Queues registered at this store's last claim (-1: none yet)."""
        return self._registry_seen

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
            return cast("bytes | None", self.client.get(key))
        except redis.ResponseError as exc:
            if not wrong_type(exc):
                raise
            raise KeyUnreadable(
                f"{what} cannot be read: {key} holds another type ({exc}); delete or repair that key"
            ) from None

    def ring_worker(self, worker: str, control: bool = False) -> None:
        """Wake the worker's main loop (its wake key) and, with ``control``, its heartbeat."""
        self._ring([self.keys.worker_wake(worker)] + ([self.keys.control(worker)] if control else []))

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

    def _complete_calls(self, results: Sequence[tuple[int, str, dict[str, Any]]]) -> list[Call]:
        """complete.lua calls for ``results``: many tasks per call, split so that no call
        carries more than COMPLETE_BATCH tasks or (past its first task) COMPLETE_BYTES."""
        k = self.keys
        fixed = [k.leases, k.done, k.done_wake, k.stats, k.incarnation]
        calls: list[Call] = []
        keys: list[str] = []
        args: list[Any] = []
        size = 0
        for task_id, token, fields in results:
            if keys and (len(keys) >= COMPLETE_BATCH or size >= COMPLETE_BYTES):
                calls.append(("complete", fixed + keys, args))
                keys, args, size = [], [], 0
            fields, _ = value_beside(fields, k.value(token), calls)
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

    def _member_values(self, fields: dict[str, Any], token: str, calls: list[Call]) -> dict[str, Any]:
        """A pack's result fields with its members' results as one value; a member's large
        return value is stored beside (a SET before the script, as for a task's "vk"),
        named in "vks"."""
        members = []
        stored = []
        for member_id, member in fields[PACK_RESULTS]:
            member, beside = value_beside(member, self.keys.value(f"{token}:{member_id}"), calls)
            if beside:
                stored.append(member[VALUE_KEY])
            members.append((member_id, packing.result_value(member)))
        out = {**fields, PACK_RESULTS: packing.dump(members)}
        if stored:
            out[PACK_VALUE_KEYS] = "\n".join(stored)
        return out

    @staticmethod
    def _accepted(calls: Sequence[Call], answers: Sequence[Any]) -> list[Delivery]:
        """Per result, what complete.lua did with it (answers of the other calls skipped)."""
        return [Delivery(a) for call, answer in zip(calls, answers) if call[0] == "complete" for a in answer[0]]

    @staticmethod
    def _complete_broken(calls: Sequence[Call], answers: Sequence[Any]) -> list[tuple[str, str]]:
        """The keys complete.lua calls found of the wrong type (answers not come yet skipped)."""
        return [
            pair
            for call, answer in zip(calls, answers)
            if call[0] == "complete" and answer
            for pair in broken_keys(answer[1])
        ]

    def renew(
        self,
        worker: str,
        status: str,
        held: dict[int, str],
        lease_ms: int,
        on_broken: Callable[[list[tuple[str, str]]], None] | None = None,
        wait_seconds: float = 0.0,
        reaper_lock_ms: int = 0,
    ) -> Renewal:
        """Heartbeat and lease renewal in one call: the ids whose lease this worker lost,
        whether its record is still there (False after a reaper gave it up for dead, or
        when its key holds another type: registering again replaces it), and what the
        manager asks of it (worker_control.py: exit; its host blocked).  Keys of the
        wrong type go to ``on_broken`` as (key, error) pairs.

        ``wait_seconds``: first wait that long, or until the worker's control key rings
        (a cancel, a request of the manager, a signal), in the same round trip: the
        renewal runs the moment the wait ends, so it sees what rang.

        ``reaper_lock_ms``: also try the reaper's lock (as ``reap`` does, in this call):
        ``Renewal.reaper`` says whether this worker took it and runs ``reap(force=True)``."""
        k = self.keys
        args: list[Any] = [lease_ms, worker, status, reaper_lock_ms]
        for task_id, token in held.items():
            args += (task_id, token)
        keys = [k.leases, k.workers, k.worker(worker), k.blocked_hosts, k.reaper_lock]
        calls: list[Any] = [("renew", keys, args)]
        if status:  # a heartbeat (not a partition's leases only): the queue's shard count too
            calls.append(("get", [k.shards], []))
        if wait_seconds > 0:
            calls.insert(0, ("blpop", [k.control(worker)], [wait_seconds]))
        answers = self._pipeline(calls)
        shards = parse_stored_shards(answers.pop()) if status else None
        rung = wait_seconds > 0 and answers[0] is not None
        if wait_seconds > 0 and isinstance(answers[0], redis.ResponseError):
            # its control key holds another type: reported, and the wait kept (no spinning)
            if on_broken is not None:
                on_broken([(k.control(worker), str(answers[0]))])
            time.sleep(wait_seconds)
            rung = False
        lost, registered, broken, shutdown, blocked, reaper = answers[-1]
        if broken and on_broken is not None:
            on_broken(broken_keys(broken))
        return Renewal(
            [int(i) for i in lost], bool(registered), bool(shutdown), bool(blocked), rung, bool(reaper), shards
        )

    def leases_with_prefix(self, prefix: str) -> dict[int, str]:
        """The tasks leased now with a token that starts with ``prefix``, by id (one scan
        of the leases: for the rare moments a worker must find what a dead child held)."""
        ids = cast("list[bytes]", self.client.zrange(self.keys.leases, 0, -1))
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

    def escalate(self, task_id: int, token: str) -> bool:
        """Requeue a task that ran out of its category's first allocation at the category's
        maximum (escalate.lua); False when it cannot be (then its result is recorded)."""
        k = self.keys
        answer = self._scripts["escalate"](
            keys=[k.task(task_id), k.leases, k.registry, k.new_queue_wake], args=[task_id, token]
        )
        return bool(answer)

    def reap(self, lock_ms: int, worker_timeout_ms: int, force: bool = False) -> list[int] | None:
        """Requeue expired leases if no other worker is reaping now (SET NX PX guard)."""
        k = self.keys
        if not force and not self.client.set(k.reaper_lock, os.getpid(), nx=True, px=lock_ms):
            return None
        result = self._scripts["reap"](
            keys=[k.leases, k.registry, k.done, k.done_wake, k.stats, k.workers, k.new_queue_wake],
            args=[1000, worker_timeout_ms],
        )
        return [int(x) for x in cast("list[int]", result)]

    def register_worker(self, worker: str, record: dict[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.worker(worker))
        pipe.hset(self.keys.worker(worker), mapping=cast("Mapping[FieldT, EncodableT]", record))
        pipe.execute()

    def unregister_worker(self, worker: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.keys.workers, worker)
        pipe.delete(self.keys.worker(worker), self.keys.worker_wake(worker), self.keys.control(worker))
        pipe.execute()

    def task_hash(self, task_id: int) -> Fields:
        """A task's hash with its large fields, as a claim gives it."""
        task = Claimed(task_id, "", "", cast(Fields, self.client.hgetall(self.keys.task(task_id))))
        self._read_big_fields([task])
        return task.fields
