"""The manager's calls of the store: attach, reserve ids, store functions and files,
submit, retrieve, cancel, and the stats snapshots."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

from . import gcpause, packing
from .answers import (
    Call,
    ExportSnapshot,
    Fields,
    Snapshot,
    Submitted,
    broken_keys,
    counters_of,
    flat_to_dict,
    tasks_by_worker,
)
from .codes import Result
from .fields import (
    BIG,
    ERROR_B,
    EXPORTED_WORKER_FIELDS_B,
    FILE_BYTES_UPLOADED_COUNT,
    FILES_UPLOADED_COUNT,
    MEMBER,
    MEMBER_B,
    PACK_CANCELLED_B,
    PACK_SIZE,
    RESULT_B,
    STATE,
    STATE_B,
    SUBMITTED,
    UNFINISHED_STATES_B,
    VALUE_B,
    VALUE_KEY_B,
)
from .keys import TASK, padded_id
from .packer import BIG_VALUE, VALUE_TTL_SECONDS
from .pipeline import ScriptPipeline
from .resources import given

SUBMIT_CHUNK_TASKS = 500  # tasks per submit.lua call (a call holds Redis while it runs)
SUBMIT_CHUNK_BYTES = 4 << 20  # ... or fewer, when their fields are this large
VALUE_LOST_RESULT = int(Result.OUTPUT_TRANSFER_ERROR)
WORKER_TIMEOUT_MS = 60_000  # a worker silent this long is not listed, nor counted, in a queue's stats


class ManagerCalls(ScriptPipeline):
    """What a manager (and ``wq-redis status``, the exporter) asks of a queue."""

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

    def publish_label(
        self, category_hex: str, label: str, learned: int, starting: bool, outstanding: int, members: list[str]
    ) -> None:
        """Publish an automatic category's allocation label and the results learned since
        the last call (label.lua; ``outstanding``: the category's tasks the manager still
        waits for), and wake the workers of its queues ``members``."""
        k = self.keys
        args = [label, learned, int(starting), outstanding, *members]
        self._scripts["label"](keys=[k.label(category_hex)], args=args)

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

    def _submit_calls(self, tasks: Iterable[tuple[int, str, float, dict[str, Any]]], incarnation: str) -> list[Call]:
        k = self.keys
        calls: list[Call] = []
        chunk: list[tuple[int, str, float, dict[str, Any]]] = []
        size = 0
        for row in tasks:
            task_id, member, priority, fields = row
            big = {name: v for name, v in fields.items() if isinstance(v, bytes) and len(v) > BIG_VALUE}
            if big:
                # each a string key of its own, SET just before the script in the same
                # pipeline: Redis keeps a SET's buffer as it came (a 1 MiB HSET copied it,
                # ~0.5 ms: Redis' times in ``python -m bench.profile_wq --phases mib``), and Lua
                # never copies them.  "big" names them; should the
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

    def _submit_call(self, rows: Sequence[tuple[int, str, float, dict[str, Any]]], incarnation: str) -> Call:
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
                [max_tasks, keep_seconds, len(acked), *acked, *released],
            )
        )
        answers = self._pipeline(calls)
        submitted = Submitted.of(calls, answers)
        rows, found = answers[-1]
        tasks = []
        with gcpause.paused():  # thousands of small dicts, no cycle among them
            for task_id, flat in rows:
                fields = flat_to_dict(flat)
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
            [([k.task(i), k.leases, k.done, k.stats], [i, "" if m is None else m]) for i, m in requests],
        )
        return [flat_to_dict(flat) if flat else None for flat in answers]

    def ids_with_tag(self, tag: str) -> list[int]:
        """Ids of waiting and running tasks carrying ``tag`` (queues are partitioned by tag)."""
        k = self.keys
        members = [m.decode() for m in cast("set[bytes]", self.client.smembers(k.registry))]
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            if member.partition("|")[2] == tag:
                pipe.zrange(k.ready(member), 0, -1)
                pipe.lrange(k.fifo(member), 0, -1)
        ids = [int(i) for batch in pipe.execute() for i in batch]
        running = [int(i) for i in cast("list[bytes]", self.client.zrange(k.leases, 0, -1))]
        pipe = self.client.pipeline(transaction=False)
        for task_id in running:
            pipe.hget(k.task(task_id), MEMBER)
        for task_id, member in zip(running, pipe.execute()):
            if member is not None and member.decode().partition("|")[2] == tag:
                ids.append(task_id)
        return ids

    def task_fields(self, task_id: int, *names: str) -> list[bytes | None]:
        return cast("list[bytes | None]", self.client.hmget(self.keys.task(task_id), list(names)))

    def snapshot(self, worker_timeout_ms: int) -> Snapshot:
        k = self.keys
        queues, running, with_results, counters, workers, running_tasks, broken = self._read_only(
            "stats",
            [k.registry, k.leases, k.done, k.stats, k.workers],
            [worker_timeout_ms, time.time_ns() // 1000],
        )
        return Snapshot(
            waiting={m.decode(): int(n) for m, n in queues},
            running=int(running),
            with_results=int(with_results),
            counters=counters_of(counters),
            workers={name.decode(): flat_to_dict(flat) for name, flat in workers},
            running_tasks=[(w.decode(), m.decode()) for w, m, _, _ in running_tasks],
            running_given=[given(m.decode(), alloc) for _, m, _, alloc in running_tasks],
            running_by_worker=tasks_by_worker(running_tasks),
            broken=broken_keys(broken),
        )

    def export_snapshot(self, levels: int = 16, sample: int = 1000) -> ExportSnapshot:
        k = self.keys
        now_us, waiting, running, counters, workers, finished, result_bytes, sampled, broken = self._read_only(
            "export",
            [k.registry, k.leases, k.done, k.stats, k.workers, k.retrieving],
            [levels, sample, time.time_ns() // 1000],
        )
        return ExportSnapshot(
            now_us=int(now_us),
            waiting={m.decode(): (int(n), int(oldest)) for m, n, oldest in waiting},
            running={m.decode(): int(n) for m, n in running},
            counters=counters_of(counters),
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
            broken=broken_keys(broken),
        )
