"""The fast lane: an idle one-slot worker's warm child claims, runs and delivers quick
PythonTasks itself, while the worker's main process keeps the leases.

Why: on the usual path a task goes Redis -> worker -> child -> worker -> Redis, and the
two hops through the worker's main process with its Python around them were about a
third of a one-task round trip (0.25 of 0.7 ms on our 2-core machines).  When a worker
has one slot and nothing to do but wait for work, the child can wait instead: it blocks
on the wake-up keys with the claim (``QueueStore.claim``) the worker would send, runs a
task it gets at once, and sends its result (``complete.lua``, fenced by the lease token
as always) in the same round trip as its next blocking claim, so a task takes the hops a
hand-written queue takes.

What stays with the main process: the child records every claim before the call starts
(``claimed``) and every result once Redis answered for it (``done``) in its ledger, a
pipe the main process reads whenever it looks (every POLL_SECONDS, and when the lane
ends or the child dies) but is never woken by: waking it twice a task cost 0.1 ms of a
0.5 ms round trip on 2 cores.  From the ledger its heartbeat renews the lease of a task
that runs for long, a cancel or a lost lease kills the child as for any batch, and
metrics, pace and results are counted.  It ends the lane when it must drain or abort
(``stop``, and a ring of its own wake key to end the child's block).

A claim that is not one quick task (followers of short tasks, a pack, a command task,
files, limits) ends the lane and goes to the main process as it is.  A child that dies
during a call leaves the task to run again on the per-task path, so its failure is
reported.  Redis away: a claim that fails ends the lane; a result that cannot be
delivered goes to the main process, which holds it and delivers it later like any other.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from ..protocol import packing
from ..protocol.connection import client_from
from ..protocol.resources import parse_class, split_member
from ..protocol.serialize import NO_ARGS, function_digest
from ..protocol.signing import SignatureError, verify_function_body
from ..protocol.store import Claimed, Delivery, QueueStore, TaskRefused
from .batch import Pace, quick_spec
from .channel import out_of_band
from .pool import missing_function_reply
from .runner import Outcome, named_host, python_outcome, result_fields, slot_environment
from .waiting import CancelSignal

if TYPE_CHECKING:
    from .child import Child
    from .pool import WarmProcess

POLL_SECONDS = 0.2  # how often the main process reads the ledger and its drain and abort flags
_FRAME = struct.Struct("!I")  # a ledger record: its size, then its pickle
_ATOMIC_BYTES = select.PIPE_BUF  # a write this small lands whole, or not at all


@dataclass
class LaneSpec:
    """What the child needs to claim and deliver as the worker would (picklable)."""

    redis: dict[str, Any]  # connection.settings_of the worker's client
    queue: str
    claim: dict[str, Any]  # keyword arguments of QueueStore.claim, wake_on included
    max_result_bytes: int
    sandbox: str
    seconds_per_task: float | None  # the worker's pace: the lane keeps it (followers per claim)


@dataclass
class LaneEnd:
    """How a lane ended: what it claimed for the main process to run, the queues it may
    block on next, and what went wrong, if anything."""

    claimed: list[Claimed] = field(default_factory=list)
    eligible: list[str] | None = None  # None: as before the lane
    error: str = ""  # the claim failed (Redis away): the main process waits a little
    failed: str = ""  # a bug of the lane's: its traceback
    broken: list[tuple[str, str]] = field(default_factory=list)  # keys its claims could not read (wrong type)


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


# -- in the child ----------------------------------------------------------------------
class ChildLane:
    """The child's side: one connection to Redis, kept while the child lives."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self._store: QueueStore | None = None
        self._settings: tuple[dict[str, Any], str] | None = None
        self._by_socket = False  # this lane's records go over the socket (its ledger was full)

    def serve(self, spec: LaneSpec) -> dict[str, Any]:
        """Claim, run and deliver until a claim brings anything else; the last message.
        A bug here ends the lane with its traceback (the worker then stops using lanes)
        instead of the child, which holds the task's lease."""
        try:
            return self._serve(spec)
        except Exception:
            return {"lane": "end", "failed": traceback.format_exc()}

    def _serve(self, spec: LaneSpec) -> dict[str, Any]:
        """The result of each task goes in the same round trip as the next claim (Redis
        answers for the result at once, and the done record is written then); a lane asked
        to stop delivers its last result alone."""
        self._by_socket = False
        store = self._store_for(spec)
        claim = dict(spec.claim)
        pace = Pace(spec.seconds_per_task)
        results: list[tuple[int, str, dict[str, Any]]] = []
        delivered: list[bool] = []
        done: Callable[[list[bool]], None] | None = None
        eligible = claim["wake_on"]
        broken: list[tuple[str, str]] = []
        while True:
            claim["followers"] = pace.followers()  # short tasks: a claim that brings more ends the lane
            try:
                claimed, eligible, _ = store.claim(**claim, results=results, delivered=done, on_broken=broken.extend)
            except redis.RedisError as exc:
                if results and not delivered:
                    return {"lane": "end", "undelivered": _sendable(results[0][2]), "eligible": eligible}
                return {"lane": "end", "error": f"claim failed ({exc})"}
            claim["wake_on"] = eligible
            if results and not delivered:  # not recorded now (a key it writes is broken): the worker holds it
                return {
                    "lane": "end",
                    "undelivered": _sendable(results[0][2]),
                    "claimed": claimed,
                    "eligible": eligible,
                    "broken": broken,
                }
            task = lane_task(claimed)
            if task is None or broken:  # broken keys: the worker reports them (log, metrics)
                return {"lane": "end", "claimed": claimed, "eligible": eligible, "broken": broken}
            self._record(
                ("claimed", task.task_id, task.token, task.member, task.fields.get(b"sub"), task.fields.get(b"ts"))
            )
            started = time.perf_counter()
            try:
                fields = self._run(store, spec, task)
            except redis.RedisError as exc:  # its function could not be read: the worker runs it again
                return {"lane": "end", "error": f"reading the function of task {task.task_id} failed ({exc})"}
            wall = time.perf_counter() - started
            pace.record(1, wall)
            results, delivered = [(task.task_id, task.token, fields)], []
            done = self._recorder(task.token, fields, wall, delivered)
            if self._stop_asked():
                try:
                    done(store.complete(results, on_broken=broken.extend))
                except redis.RedisError:
                    return {"lane": "end", "undelivered": _sendable(fields), "eligible": eligible}
                if not delivered:
                    return {"lane": "end", "undelivered": _sendable(fields), "eligible": eligible, "broken": broken}
                return {"lane": "end", "eligible": eligible, "broken": broken}

    def _recorder(
        self, token: str, fields: dict[str, Any], wall: float, delivered: list[bool]
    ) -> Callable[[list[bool]], None]:
        """What writes a task's done record once Redis answered for its result."""
        summary = {name: fields[name] for name in ("r", "meas") if name in fields}

        def done(accepted: list[Delivery]) -> None:
            if accepted[0] is Delivery.RETRY:  # not recorded now: the lane ends and hands it to the worker
                return
            delivered.append(True)
            self._record(("done", token, accepted[0], summary, wall))

        return done

    def _record(self, record: tuple[Any, ...]) -> None:
        """Into the ledger; over the socket (which wakes the worker) once it was full, and
        from then on for the rest of the lane: the worker reads the whole ledger before
        each socket message, so records keep their order."""
        if not self._by_socket:
            data = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
            frame = _FRAME.pack(len(data)) + data
            if self.child.ledger >= 0 and len(frame) <= _ATOMIC_BYTES:
                try:
                    os.write(self.child.ledger, frame)
                    return
                except BlockingIOError:
                    pass
            self._by_socket = True
        self.child.conn.send({"lane": "record", "record": record})

    def _store_for(self, spec: LaneSpec) -> QueueStore:
        key = (spec.redis, spec.queue)
        if self._store is None or self._settings != key:
            # named for operators: CLIENT LIST tells a lane's connection from its worker's
            self._store = QueueStore(
                client_from(spec.redis, lane_client_name(spec.claim["worker"])), spec.queue, one_thread=True
            )
            self._settings = key
        return self._store

    def _stop_asked(self) -> bool:
        """Whether the worker asked the lane to end (a message waits on the socket)."""
        if not select.select([self.child.conn.sock], [], [], 0)[0]:
            return False
        self.child.conn.recv()  # only "stop" is sent while a lane runs
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
        env = slot_environment(parse_class(split_member(task.member)[0]), [], spec.sandbox)
        task_env = (quick_spec(task.fields) or {}).get("env") or {}
        call = (task.task_id, digest, task.fields.get(b"args") or NO_ARGS, task_env)
        reply = self.child.run_batch([call], bodies, env, spec.sandbox)
        result: dict[str, Any]
        if reply["status"] == "need_body":
            result = missing_function_reply(digest)
        else:
            result = reply["results"][0]
            if isinstance(result["value"], pickle.PickleBuffer):  # marked for a channel it does not take
                result["value"] = result["value"].raw()
        return result_fields(
            task.task_id,
            python_outcome(result),
            {},
            result["wall"],
            spec.max_result_bytes,
            None,
            named_host(task.fields),
        )


def _sendable(fields: dict[str, Any]) -> dict[str, Any]:
    """Result fields for the socket to the worker (a large value as a buffer beside)."""
    return {name: out_of_band(value) if isinstance(value, memoryview) else value for name, value in fields.items()}


# -- in the worker ---------------------------------------------------------------------
class LaneHost:
    """What the worker's main process does as the lane reports (see ``Worker``)."""

    def lane_claimed(
        self, task_id: int, token: str, member: str, fields: dict[bytes, bytes], stop: Callable[[], None]
    ) -> Any:
        """A claim the child runs (or ran); returns what the other calls get back."""
        raise NotImplementedError

    def lane_done(self, held: Any, accepted: bool, summary: dict[str, Any], wall: float) -> None:
        """The child delivered the task's result (``accepted``: Redis took it); ``summary``:
        its result code and measurements, ``wall``: seconds it ran."""
        raise NotImplementedError

    def lane_lost(self, held: Any, cancelled: bool) -> None:
        """The child died (or was killed for a cancel) while it ran the task."""
        raise NotImplementedError

    def lane_undelivered(self, held: Any, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def lane_gone(self, token_prefix: str) -> None:
        """The child died or was killed: hand back what it may have claimed and not
        recorded yet (its leases have ``token_prefix``, the lane's own)."""
        raise NotImplementedError

    def lane_should_stop(self) -> bool:
        raise NotImplementedError

    def lane_interrupt(self) -> None:
        """End the child's block on Redis (ring this worker's own wake key)."""
        raise NotImplementedError


class _Ledger:
    """The worker's reading of a child's ledger: the tasks it runs, by lease token."""

    def __init__(self, proc: WarmProcess, host: LaneHost) -> None:
        self.proc = proc
        self.host = host
        self.running: dict[str, tuple[Any, CancelSignal]] = {}
        self._rest = b""

    def read(self) -> None:
        """Take in every record written so far."""
        chunks = [self._rest]
        while self.proc.ledger >= 0:
            try:
                chunk = os.read(self.proc.ledger, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        offset = 0
        while offset + _FRAME.size <= len(data):
            (size,) = _FRAME.unpack_from(data, offset)
            if offset + _FRAME.size + size > len(data):
                break
            self.apply(pickle.loads(data[offset + _FRAME.size : offset + _FRAME.size + size]))
            offset += _FRAME.size + size
        self._rest = data[offset:]

    def apply(self, record: tuple[Any, ...]) -> None:
        if record[0] == "claimed":
            _, task_id, token, member, submitted, started = record
            fields = {name: value for name, value in ((b"sub", submitted), (b"ts", started)) if value is not None}
            cancel = CancelSignal()
            self.running[token] = (self.host.lane_claimed(task_id, token, member, fields, cancel.set), cancel)
        else:
            _, token, accepted, summary, wall = record
            entry = self.running.pop(token, None)
            if entry is None:  # cannot happen while records keep their order: nothing to count
                return
            held, cancel = entry
            cancel.close()
            self.host.lane_done(held, accepted, summary, wall)

    def cancelled(self, events: dict[int, int]) -> bool:
        """Whether a task the child still runs was cancelled (its lease lost)."""
        if not any(cancel.read_fd in events for _, cancel in self.running.values()):
            return False
        self.read()  # perhaps it was done already
        return any(cancel.is_set for _, cancel in self.running.values())

    def end(self) -> None:
        """The child is gone: the tasks it did not finish were cancelled, or are lost."""
        for held, cancel in self.running.values():
            cancelled = cancel.is_set
            cancel.close()
            self.host.lane_lost(held, cancelled=cancelled)
        self.running.clear()


def drive(proc: WarmProcess, spec: LaneSpec, host: LaneHost) -> LaneEnd:
    """Run a lane on ``proc`` until it ends; the caller gives the child back to its pool
    (a killed or dead child is closed there)."""
    try:
        proc.conn.send({"lane": spec})
    except OSError:
        return LaneEnd()
    ledger = _Ledger(proc, host)
    stopping = False
    try:
        while True:
            poller = select.poll()
            poller.register(proc.conn.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
            for _, cancel in ledger.running.values():
                poller.register(cancel.read_fd, select.POLLIN)
            events = dict(poller.poll(POLL_SECONDS * 1000))
            ledger.read()
            if ledger.cancelled(events):  # a cancel or a lost lease of a task it runs
                proc.kill()  # (``cancelled`` read the ledger just before)
                ledger.end()
                host.lane_gone(spec.claim["token_prefix"])
                return LaneEnd()
            if proc.conn.fileno() in events:
                try:
                    message = proc.conn.recv()
                except (EOFError, OSError):
                    ledger.read()
                    proc.kill()
                    ledger.end()
                    host.lane_gone(spec.claim["token_prefix"])
                    return LaneEnd()
                if message["lane"] == "record":  # the ledger was full
                    ledger.apply(message["record"])
                else:
                    ledger.read()
                    if message.get("undelivered") is not None:
                        held, cancel = ledger.running.popitem()[1]
                        cancel.close()
                        host.lane_undelivered(held, message["undelivered"])
                    ledger.end()  # a task it claimed and did not finish (Redis away, or a bug)
                    return LaneEnd(
                        message.get("claimed") or [],
                        message.get("eligible"),
                        message.get("error", ""),
                        failed=message.get("failed", ""),
                        broken=message.get("broken") or [],
                    )
            if not stopping and host.lane_should_stop():
                stopping = True
                _ask_to_stop(proc, host)
    finally:
        for _, cancel in ledger.running.values():
            cancel.close()


def _ask_to_stop(proc: WarmProcess, host: LaneHost) -> None:
    try:
        proc.conn.send({"lane": "stop"})
    except OSError:
        return  # the child is gone: the next read says so
    host.lane_interrupt()
