"""The fast lane: an idle one-slot worker's warm child claims, runs and delivers quick
PythonTasks itself, while the worker's main process keeps the leases.

Why: on the usual path a task goes Redis -> worker -> child -> worker -> Redis, and the
two hops through the worker's main process with its Python around them were about a
third of a one-task round trip (0.25 of 0.7 ms on our 2-core machines).  When a worker
has one slot and nothing to do but wait for work, the child can wait instead: it blocks
on the wake-up keys with the same claim (``QueueStore.claim``) the worker would send,
runs a task it gets at once, records the result (``complete.lua``, fenced by the lease
token as always) and blocks again, so a task takes the hops a hand-written queue takes.

What stays with the main process: it hears of every claim before the call starts
(``claimed``), so its heartbeat renews that lease and a cancel or a lost lease kills the
child as for any batch; it counts metrics, pace and results (``done``); it ends the lane
when it must drain or abort (``stop``, and a ring of its own wake key to end the child's
block).  A claim that is not one quick task (followers, a pack, a command task, files,
limits) ends the lane and goes to the main process as it is.  A child that dies during a
call leaves the task to run again on the per-task path, so its failure is reported.
Redis away: a claim that fails ends the lane; a result that cannot be delivered goes to
the main process, which holds it and delivers it later like any other.
"""

from __future__ import annotations

import select
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import redis

from .. import packing
from ..connection import client_from
from ..resources import parse_class, split_member
from ..serialize import NO_ARGS, function_digest
from ..signing import SignatureError, verify_function_body
from ..store import Claimed, QueueStore
from .batch import quick_spec
from .runner import named_host, python_outcome, result_fields, slot_environment
from .waiting import CancelSignal

if TYPE_CHECKING:
    from .child import Child
    from .pool import WarmProcess

POLL_SECONDS = 0.2  # how often the main process looks at its drain and abort flags meanwhile


@dataclass
class LaneSpec:
    """What the child needs to claim and deliver as the worker would (picklable)."""

    redis: dict[str, Any]  # connection.settings_of the worker's client
    queue: str
    claim: dict[str, Any]  # keyword arguments of QueueStore.claim, wake_on included
    max_result_bytes: int
    sandbox: str


@dataclass
class LaneEnd:
    """How a lane ended: what it claimed for the main process to run, the queues it may
    block on next, and what went wrong, if anything."""

    claimed: list[Claimed] = field(default_factory=list)
    eligible: list[str] | None = None  # None: as before the lane
    error: str = ""  # the claim failed (Redis away): the main process waits a little
    undelivered: dict[str, Any] | None = None  # result fields Redis did not take
    child_gone: bool = False  # the child died or was killed (it is replaced)


def lane_task(claimed: list[Claimed]) -> Claimed | None:
    """The one quick task the lane runs itself, or None (the main process takes over)."""
    if len(claimed) != 1:
        return None
    task = claimed[0]
    if packing.MEMBERS in task.fields or quick_spec(task.fields) is None:
        return None
    return task


# -- in the child ----------------------------------------------------------------------
class ChildLane:
    """The child's side: one connection to Redis, kept while the child lives."""

    def __init__(self, child: "Child") -> None:
        self.child = child
        self._store: QueueStore | None = None
        self._settings: tuple[dict[str, Any], str] | None = None

    def serve(self, spec: LaneSpec) -> dict[str, Any]:
        """Claim, run and deliver until a claim brings anything else; the last message."""
        store = self._store_for(spec)
        claim = dict(spec.claim)
        while True:
            try:
                claimed, eligible, _ = store.claim(**claim)
            except redis.RedisError as exc:
                return {"lane": "end", "error": f"claim failed ({exc})"}
            claim["wake_on"] = eligible
            task = lane_task(claimed)
            if task is None:
                return {"lane": "end", "claimed": claimed, "eligible": eligible}
            self.child.conn.send({"lane": "claimed", "task": task})
            fields = self._run(store, spec, task)
            try:
                accepted = store.complete([(task.task_id, task.token, fields)])[0]
            except redis.RedisError:
                return {"lane": "end", "undelivered": fields, "eligible": eligible}
            summary = {name: fields[name] for name in ("r", "meas") if name in fields}
            self.child.conn.send({"lane": "done", "accepted": accepted, "summary": summary})
            if self._stop_asked():
                return {"lane": "end", "eligible": eligible}

    def _store_for(self, spec: LaneSpec) -> QueueStore:
        key = (spec.redis, spec.queue)
        if self._store is None or self._settings != key:
            self._store = QueueStore(client_from(spec.redis), spec.queue)
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
            body = store.function(digest)
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
        if reply["status"] == "need_body":
            result = {"status": "error", "value": None, "stdout": b"", "cpu_time": 0.0, "max_rss_mb": 0, "wall": 0.0,
                      "error": f"the task's function {digest[:12]} is missing from Redis"}
        else:
            result = reply["results"][0]
        return result_fields(task.task_id, python_outcome(result), {}, result["wall"], spec.max_result_bytes, None,
                             named_host(task.fields))


# -- in the worker ---------------------------------------------------------------------
class LaneHost:
    """What the worker's main process does as the lane reports (see ``Worker``)."""

    def lane_claimed(self, task: Claimed, stop: Callable[[], None]) -> Any:
        """A claim the child runs now; returns what ``lane_done`` gets back."""
        raise NotImplementedError

    def lane_done(self, held: Any, accepted: bool, summary: dict[str, Any]) -> None:
        raise NotImplementedError

    def lane_lost(self, held: Any, cancelled: bool) -> None:
        """The child died (or was killed for a cancel) while it ran the task."""
        raise NotImplementedError

    def lane_undelivered(self, held: Any, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def lane_should_stop(self) -> bool:
        raise NotImplementedError

    def lane_interrupt(self) -> None:
        """End the child's block on Redis (ring this worker's own wake key)."""
        raise NotImplementedError


def drive(proc: "WarmProcess", spec: LaneSpec, host: LaneHost) -> LaneEnd:
    """Run a lane on ``proc`` until it ends; the caller gives the child back to its pool
    (a killed or dead child is closed there)."""
    try:
        proc.conn.send({"lane": spec})
    except OSError:
        return LaneEnd(child_gone=True)
    held: Any = None
    cancel: CancelSignal | None = None  # one per task run: a cancel concerns that task only
    stopping = False
    try:
        while True:
            poller = select.poll()
            poller.register(proc.conn.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
            if cancel is not None:
                poller.register(cancel.read_fd, select.POLLIN)
            events = dict(poller.poll(POLL_SECONDS * 1000))
            if cancel is not None and cancel.read_fd in events:  # cancelled, or its lease lost
                proc.kill()
                host.lane_lost(held, cancelled=True)
                return LaneEnd(child_gone=True)
            if events:
                try:
                    message = proc.conn.recv()
                except (EOFError, OSError):
                    proc.kill()
                    if held is not None:
                        host.lane_lost(held, cancelled=False)
                    return LaneEnd(child_gone=True)
                kind = message["lane"]
                if kind == "claimed":
                    cancel = CancelSignal()
                    held = host.lane_claimed(message["task"], cancel.set)
                elif kind == "done":
                    host.lane_done(held, message["accepted"], message["summary"])
                    held = None
                    cancel.close()  # type: ignore[union-attr]
                    cancel = None
                else:
                    if message.get("undelivered") is not None:
                        host.lane_undelivered(held, message["undelivered"])
                    return LaneEnd(message.get("claimed") or [], message.get("eligible"), message.get("error", ""))
            if not stopping and host.lane_should_stop():
                stopping = True
                _ask_to_stop(proc, host)
    finally:
        if cancel is not None:
            cancel.close()


def _ask_to_stop(proc: "WarmProcess", host: LaneHost) -> None:
    try:
        proc.conn.send({"lane": "stop"})
    except OSError:
        return  # the child is gone: the next read says so
    host.lane_interrupt()
