"""The manager's calls on a queue kept in N partitions (``WorkQueue(name, shards=N)``).

``ShardedStore`` is the store of partition 0 (protocol/partitions.py says what lives
there: ids, functions, files, categories, workers), and fans out what concerns tasks:

- submit: each row goes to its task's partition (``id % N``: consecutive ids go round the
  partitions), one submit.lua pipeline per partition; then the queue's doorbell, partition
  0's new-queue wake key, is rung once, because idle workers wait in partition 0 only
  (worker/partitions.py).  On a single Redis all partitions share one connection, and
  their calls go in one round trip;
- retrieve: every partition is asked in turn, from a partition that rotates per call so
  that none is served first always, each up to the whole batch (so that "fewer than the
  batch came back" still means every done list is empty: Retrieving's ``_drained``);
  acknowledgements and releases go to their tasks' partitions;
- blocking for a completion: each partition's completions ring its own ``done:wake``.
  On a single Redis one BLPOP waits on all of them.  On a cluster it cannot (BLPOP's
  keys must share a slot), so the manager waits on each partition in turn, at most
  ``TURN_SECONDS`` each: a completion elsewhere waits at most that long per partition,
  and a manager blocked in ``wait`` makes about 1/TURN_SECONDS calls a second;
- the incarnation is the partitions' tokens joined by ",": any partition that lost its
  state (a failover to a replica that missed writes) makes the manager recover, as one;
- cancel, a task's fields: the task's partition; a running task cancelled in partition
  i > 0 rings its worker's control key in partition 0 (where its heartbeat waits);
- stats: the partitions' snapshots summed (partitions.merge_snapshots); labels of
  automatic categories go to every partition (claims read them there).

A partition i > 0 that does not answer (its primary died and the cluster has not yet
promoted its replica: protocol/partition_outage.py) is skipped for half a second at a time by
retrieve and the blocking wait, so ``wait`` goes on handing out the other partitions'
tasks: its incarnation is taken as unchanged (the token this manager holds: not asking is
no sign of lost state), acknowledgements and releases of its tasks are kept for the next
retrieve that reaches it, and once it answers again the wait reports it rung, so its done
list is read at once.  ``_drained`` keeps its meaning for the partitions asked: the
blocking wait that follows is what finds the skipped one back.  Submits whose rows go to
it, stats and cancels are raised (the manager's Reconnect retries them, as for an
unsharded queue): a sum that leaves a partition out would read as fewer tasks waiting
and running, and a factory would let workers go for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import redis

from ..protocol.answers import Call, ExportSnapshot, Fields, Snapshot, Submitted
from ..protocol.cluster import is_cluster
from ..protocol.fields import STATE_B, STATE_RUNNING_B, WORKER
from ..protocol.partition_outage import DownPartitions, fail_fast
from ..protocol.partitions import merge_exports, merge_snapshots, parse_stored_shards, partition_of, split
from ..protocol.store import QueueStore

log = logging.getLogger("wq_redis.client.queue")
TURN_SECONDS = 0.1  # on a cluster, a blocked manager waits this long on one partition, then the next

Row = tuple[int, str, float, dict[str, Any]]


class ShardedStore(QueueStore):
    """Partition 0's store, with the calls that concern tasks spread over all partitions."""

    def __init__(self, client: Any, queue: str, shards: int, durability: str = "none") -> None:
        super().__init__(client, queue, durability=durability)
        self.shards = shards
        self.parts: list[QueueStore] = [self] + [
            QueueStore(client, queue, durability=durability, part=i) for i in range(1, shards)
        ]
        # a single Redis: every partition's calls may share one pipeline, and one BLPOP
        self.one_server = not is_cluster(client)
        self._turn = 0
        fail_fast(client, self.parts[1:])
        self.down = DownPartitions(log, queue, "wait goes on with the other partitions' tasks")
        # acknowledgements and releases of tasks of partitions that were down, for the next
        # retrieve that reaches them
        self._kept: dict[int, tuple[list[int], list[int]]] = {}

    def _order(self) -> list[int]:
        """The partitions in the order this call asks them: the first rotates per call."""
        first, self._turn = self._turn, (self._turn + 1) % self.shards
        return [(first + i) % self.shards for i in range(self.shards)]

    @staticmethod
    def _tokens(incarnation: str, shards: int) -> list[str]:
        """Each partition's incarnation from the queue's (one token for all while pending)."""
        tokens = incarnation.split(",")
        return tokens if len(tokens) == shards else [incarnation] * shards

    # -- attach, recovery ------------------------------------------------------------------
    def attach(self, new_token: str, highest_id: int) -> tuple[str, bool]:
        """Every partition's incarnation joined (each keeps its own: ``new_token`` where it
        had none), the id counter (partition 0's) past ``highest_id``, and the shard count
        stored for the workers."""
        tokens, busy = [], False
        for part in self.parts:
            token, maybe = QueueStore.attach(part, new_token, highest_id if part is self else 0)
            tokens.append(token)
            busy = busy or maybe
        try:
            before = self.client.set(self.keys.shards, self.shards, get=True)
        except redis.ResponseError:  # another type there (another client's): replaced
            self.client.delete(self.keys.shards)
            before = self.client.set(self.keys.shards, self.shards, get=True)
        if parse_stored_shards(before) is None:
            # the queue had no count: its workers (started before this manager) claim in
            # partition 0 only until a heartbeat reads it; ring their heartbeats now
            found: Any = self.client.zrange(self.keys.workers, 0, -1)
            workers = [w.decode(errors="replace") if isinstance(w, bytes) else str(w) for w in found]
            self._ring([self.keys.control(worker) for worker in workers])
        return ",".join(tokens), busy

    def unfinished_tasks(self, count: int = 1000) -> dict[int, Fields]:
        found: dict[int, Fields] = {}
        for part in self.parts:
            found.update(QueueStore.unfinished_tasks(part, count))
        return found

    def publish_label(
        self, category_hex: str, label: str, learned: int, starting: bool, outstanding: int, members: list[str]
    ) -> None:
        for part in self.parts:  # each partition's claims read the label of its own keys
            QueueStore.publish_label(part, category_hex, label, learned, starting, outstanding, members)

    # -- submit ----------------------------------------------------------------------------
    def submit(self, tasks: Iterable[Row], incarnation: str) -> Submitted:
        done = self._submit(list(tasks), incarnation)
        if done.lost is not None:
            raise done.lost
        return done

    def _submit(self, rows: list[Row], incarnation: str) -> Submitted:
        """Queue ``rows`` in their partitions (lost set, not raised, if any refused them)."""
        if not rows:
            return Submitted()
        tokens = self._tokens(incarnation, self.shards)
        by_part = split(rows, self.shards)
        done = Submitted()
        if self.one_server:  # one round trip for every partition
            calls: list[Call] = []
            for part, part_rows in by_part.items():
                calls += self.parts[part]._submit_calls(part_rows, tokens[part])
            done = Submitted.of(calls, self._pipeline(calls))
        else:
            for part, part_rows in by_part.items():
                store = self.parts[part]
                calls = store._submit_calls(part_rows, tokens[part])
                answer = Submitted.of(calls, store._pipeline(calls))
                done.queued += answer.queued
                done.replaced += answer.replaced
                done.lost = done.lost or answer.lost
        if any(part for part in by_part):
            self._ring([self.keys.new_queue_wake])  # the doorbell: idle workers wait in partition 0
        return done

    # -- retrieve --------------------------------------------------------------------------
    def retrieve(
        self,
        max_tasks: int,
        keep_seconds: int,
        acked: Sequence[int],
        block: float = 0.0,
        submit: Sequence[Row] = (),
        released: Sequence[int] = (),
        read_packs: bool = True,
        incarnation: str = "",
    ) -> tuple[list[tuple[int, int, Fields]], str | None, Submitted]:
        submitted = self._submit(list(submit), incarnation)
        acks, frees = split(acked, self.shards, int), split(released, self.shards, int)
        for part, (kept_acks, kept_frees) in self._kept.items():  # (usually none)
            acks[part] = kept_acks + acks.get(part, [])
            frees[part] = kept_frees + frees.get(part, [])
        rows: list[tuple[int, int, Fields]] = []
        found: list[str | None] = [None] * self.shards
        tokens = self._tokens(incarnation, self.shards)
        for part in self._order():
            answer = self.down.ask(
                part,
                "retrieve",
                partial(
                    QueueStore.retrieve,
                    self.parts[part],
                    max_tasks,
                    keep_seconds,
                    acks.get(part, ()),
                    0.0,
                    (),
                    frees.get(part, ()),
                    read_packs,
                ),
                None,
            )
            if answer is None:  # skipped, or down now
                found[part] = self._keep(part, acks, frees, tokens)
                continue
            taken, found[part], _ = answer
            if self._kept:
                self._kept.pop(part, None)  # sent now
            rows += taken
        if block > 0 and not rows and max_tasks > 0:
            rung = self._wait_any(block)
            if rung is not None:
                try:
                    taken, seen, _ = QueueStore.retrieve(
                        self.parts[rung], max_tasks, keep_seconds, (), 0.0, (), (), read_packs
                    )
                except redis.RedisError as exc:
                    self.down.failed(rung, "retrieve", exc)
                else:
                    rows += taken
                    found[rung] = seen
        whole = None if any(token is None for token in found) else ",".join(t or "" for t in found)
        return rows, whole, submitted

    def _keep(self, part: int, acks: dict[int, list[int]], frees: dict[int, list[int]], tokens: list[str]) -> str:
        """Partition ``part`` was not asked: keep what was for it (with what was kept
        already) for a later retrieve; its incarnation as this manager holds it."""
        if part in acks or part in frees:
            self._kept[part] = (list(acks.get(part, [])), list(frees.get(part, [])))
        return tokens[part]

    def _wait_any(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` for a completion in any partition; the partition rung
        (or one that answers again after an outage: its done list may hold tasks)."""
        wakes = [part.keys.done_wake for part in self.parts]
        if self.one_server:
            answer = self.client.blpop(wakes, timeout=max(timeout, 0.001))
            if not answer:
                return None
            key = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
            return wakes.index(key)
        deadline = time.monotonic() + timeout
        while True:
            for part in self._order():
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if part and self.down.skipped(part):
                    continue
                try:
                    rung = self.parts[part].client.blpop([wakes[part]], timeout=max(min(left, TURN_SECONDS), 0.001))
                except redis.RedisError as exc:
                    self.down.failed(part, "wait", exc)
                    continue
                if self.down.answered(part) or rung:
                    return part

    def wait_done(self, timeout: float) -> None:
        self._wait_any(timeout)

    # -- by task ---------------------------------------------------------------------------
    def cancel(self, requests: Sequence[tuple[int, int | None]]) -> list[Fields | None]:
        answers: dict[tuple[int, int | None], Fields | None] = {}
        for part, part_requests in split(requests, self.shards).items():
            for request, fields in zip(part_requests, QueueStore.cancel(self.parts[part], part_requests)):
                answers[request] = fields
                worker = (fields or {}).get(WORKER.encode())
                if part and worker and fields and fields.get(STATE_B) == STATE_RUNNING_B:
                    # its heartbeat waits on its control key in partition 0: it stops the task now
                    self._ring([self.keys.control(worker.decode(errors="replace"))])
        return [answers[request] for request in requests]

    def ids_with_tag(self, tag: str) -> list[int]:
        return [i for part in self.parts for i in QueueStore.ids_with_tag(part, tag)]

    def task_fields(self, task_id: int, *names: str) -> list[bytes | None]:
        return QueueStore.task_fields(self.parts[partition_of(task_id, self.shards)], task_id, *names)

    # -- stats -----------------------------------------------------------------------------
    def snapshot(self, worker_timeout_ms: int) -> Snapshot:
        return merge_snapshots([QueueStore.snapshot(part, worker_timeout_ms) for part in self.parts])

    def partition_snapshots(self, worker_timeout_ms: int) -> list[Snapshot]:
        """Each partition's own snapshot, partition 0 first (per-partition detail)."""
        return [QueueStore.snapshot(part, worker_timeout_ms) for part in self.parts]

    def export_snapshot(self, levels: int = 16, sample: int = 1000) -> ExportSnapshot:
        return merge_exports([QueueStore.export_snapshot(part, levels, sample) for part in self.parts])

    def close_idle_connections(self) -> None:
        for part in self.parts:
            QueueStore.close_idle_connections(part)


def open_store(client: Any, queue: str, shards: int, durability: str = "none") -> QueueStore:
    """The manager's store of ``queue``: a plain one for an unsharded queue (exactly as
    before sharding existed), else a ShardedStore."""
    if shards == 1:
        return QueueStore(client, queue, durability=durability)
    return ShardedStore(client, queue, shards, durability)
