"""The child's side of the fast lane (worker/lane.py tells the whole design): it claims
quick PythonTasks for its idle one-slot worker, runs them itself and delivers their
results, recording each in its ledger.  Imported on the lane's first use: this is where a
warm child takes in redis-py and the store.
"""

from __future__ import annotations

import os
import pickle
import select
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from ...protocol import packing
from ...protocol.connection import client_from
from ...protocol.fields import ALLOCATED_B, ARGS_B, MEASURED, RESULT, STARTED_B, SUBMITTED_B
from ...protocol.resources import given
from ...protocol.serialize import NO_ARGS, function_digest
from ...protocol.signing import SignatureError, verify_function_body
from ...protocol.store import Claimed, Delivery, QueueStore, TaskRefused
from .channel import out_of_band
from .environment import slot_environment
from .ledger import ATOMIC_BYTES, frame
from .messages import BatchDone, LaneClaimed, LaneDone, LaneEnd, LaneSpec, RunBatch
from .quick import Pace, quick_spec
from .results import Outcome, batch_outcomes, missing_function, named_host, result_fields

if TYPE_CHECKING:
    from .process import Child


def lane_client_name(worker: str) -> str:
    """The Redis client name of a worker's lane connection (CLIENT SETNAME takes printable
    ASCII but the space)."""
    return "wq-lane:" + "".join(c if "!" <= c <= "~" else "_" for c in worker)


def lane_task(claimed: list[Claimed]) -> Claimed | None:
    """The one quick task the lane runs itself, or None (the main process takes over)."""
    if len(claimed) != 1:
        return None
    task = claimed[0]
    if task.refused or packing.MEMBERS in task.fields or quick_spec(task.fields) is None:
        return None
    return task


class ChildLane:
    """The child's side: one connection to Redis, kept while the child lives."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self._store: QueueStore | None = None
        self._settings: tuple[dict[str, Any], str, str] | None = None
        self._by_socket = False  # this lane's records go over the socket (its ledger was full)

    def serve(self, spec: LaneSpec) -> LaneEnd:
        """Claim, run and deliver until a claim brings anything else; the last message.
        A bug here ends the lane with its traceback (the worker then stops using lanes)
        instead of the child, which holds the task's lease."""
        try:
            return self._serve(spec)
        except Exception:
            return LaneEnd([], [], failed=traceback.format_exc())

    def _serve(self, spec: LaneSpec) -> LaneEnd:
        """The result of each task goes in the same round trip as the next claim (Redis
        answers for the result at once, and the done record is written then); a lane asked
        to stop delivers its last result alone."""
        self._by_socket = False
        store = self._store_for(spec)
        claim = dict(spec.claim)
        pace = Pace(spec.seconds_per_call)
        results: list[tuple[int, str, dict[str, Any]]] = []
        delivered: list[bool] = []
        done: Callable[[list[Delivery]], None] | None = None
        eligible = claim["wake_on"]
        broken: list[tuple[str, str]] = []
        while True:
            claim["followers"] = pace.followers()  # short tasks: a claim that brings more ends the lane
            try:
                claimed, eligible, _ = store.claim(**claim, results=results, delivered=done, on_broken=broken.extend)
            except redis.RedisError as exc:
                if results and not delivered:
                    return LaneEnd([], [], eligible, undelivered=_sendable(results[0][2]))
                return LaneEnd([], [], error=f"claim failed ({exc})")
            claim["wake_on"] = eligible
            if results and not delivered:  # not recorded now (a key it writes is broken): the worker holds it
                return LaneEnd(claimed, broken, eligible, undelivered=_sendable(results[0][2]))
            task = lane_task(claimed)
            if task is None or broken:  # broken keys: the worker reports them (log, metrics)
                if claimed:  # the worker runs them, on its own connections: this one would idle meanwhile
                    store.close_idle_connections()
                return LaneEnd(claimed, broken, eligible)
            self._record(
                LaneClaimed(
                    task.task_id, task.token, task.member, task.fields.get(SUBMITTED_B), task.fields.get(STARTED_B)
                )
            )
            started = time.perf_counter()
            try:
                fields = self._run(store, spec, task)
            except redis.RedisError as exc:  # its function could not be read: the worker runs it again
                return LaneEnd([], [], error=f"reading the function of task {task.task_id} failed ({exc})")
            wall = time.perf_counter() - started
            pace.record(1, wall)
            results, delivered = [(task.task_id, task.token, fields)], []
            done = self._recorder(task.token, fields, wall, delivered)
            if self._stop_asked():
                try:
                    done(store.complete(results, on_broken=broken.extend))
                except redis.RedisError:
                    return LaneEnd([], [], eligible, undelivered=_sendable(fields))
                if not delivered:
                    return LaneEnd([], broken, eligible, undelivered=_sendable(fields))
                return LaneEnd([], broken, eligible)

    def _recorder(
        self, token: str, fields: dict[str, Any], wall: float, delivered: list[bool]
    ) -> Callable[[list[Delivery]], None]:
        """What writes a task's done record once Redis answered for its result."""
        summary = {name: fields[name] for name in (RESULT, MEASURED) if name in fields}

        def done(accepted: list[Delivery]) -> None:
            if accepted[0] is Delivery.RETRY:  # not recorded now: the lane ends and hands it to the worker
                return
            delivered.append(True)
            self._record(LaneDone(token, accepted[0], summary, wall))

        return done

    def _record(self, record: LaneClaimed | LaneDone) -> None:
        """Into the ledger; over the socket (which wakes the worker) once it was full, and
        from then on for the rest of the lane: the worker reads the whole ledger before
        each socket message, so records keep their order."""
        if not self._by_socket:
            data = frame(record)
            if self.child.ledger >= 0 and len(data) <= ATOMIC_BYTES:
                try:
                    os.write(self.child.ledger, data)
                    return
                except BlockingIOError:
                    pass
            self._by_socket = True
        self.child.conn.send_message(record)

    def _store_for(self, spec: LaneSpec) -> QueueStore:
        key = (spec.redis, spec.queue, spec.durability)
        if self._store is None or self._settings != key:
            # named for operators: CLIENT LIST tells a lane's connection from its worker's
            self._store = QueueStore(
                client_from(spec.redis, lane_client_name(spec.claim["worker"])),
                spec.queue,
                one_thread=True,
                durability=spec.durability,
            )
            self._settings = key
        return self._store

    def _stop_asked(self) -> bool:
        """Whether the worker asked the lane to end (a message waits on the socket)."""
        if not select.select([self.child.conn.sock], [], [], 0)[0]:
            return False
        self.child.conn.recv_message()  # only StopLane is sent while a lane runs
        return True

    def _run(self, store: QueueStore, spec: LaneSpec, task: Claimed) -> dict[str, Any]:
        """The task's result fields, as a batch of one would give them."""
        digest = function_digest(task.fields)
        bodies = {}
        if digest not in self.child.functions:
            try:
                body = store.function(digest, spec.claim.get("max_task_bytes", 0))
            except TaskRefused as exc:
                return result_fields(
                    task.task_id,
                    Outcome(exc.result, 0, b"", str(exc)),
                    {},
                    0.0,
                    spec.max_result_bytes,
                    None,
                    named_host(task.fields),
                )
            if body is not None:
                try:
                    verify_function_body(digest, body)
                    bodies[digest] = body
                except SignatureError:
                    pass  # reported as a missing function: it is not the one the task names
        env = slot_environment(given(task.member, task.fields.get(ALLOCATED_B)), [], spec.sandbox)
        task_env = (quick_spec(task.fields) or {}).get("env") or {}
        args = task.fields.get(ARGS_B) or NO_ARGS
        batch = RunBatch([task.task_id], [digest], [args], [task_env], bodies, env, spec.sandbox)
        done = self.child.run_batch(batch)
        if isinstance(done, BatchDone):
            outcome, wall = batch_outcomes(done)[0], done.walls[0]
            if isinstance(outcome.value, pickle.PickleBuffer):  # marked for a channel it does not take
                outcome.value = outcome.value.raw()
        else:  # NeedBodies: not in Redis, or not the function the task names
            outcome, wall = missing_function(digest), 0.0
        return result_fields(task.task_id, outcome, {}, wall, spec.max_result_bytes, None, named_host(task.fields))


def _sendable(fields: dict[str, Any]) -> dict[str, Any]:
    """Result fields for the socket to the worker (a large value as a buffer beside)."""
    return {name: out_of_band(value) if isinstance(value, memoryview) else value for name, value in fields.items()}
