"""The fast lane, the worker's side (the child's is child/lane.py): an idle one-slot
worker's warm child claims, runs and delivers quick PythonTasks itself, while the
worker's main process keeps the leases.

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
0.5 ms round trip on 2 cores (the round trip p50 of ``python -m bench.run --systems wq``).  From the ledger its
heartbeat renews the lease of a task
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
import select
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..protocol.fields import STARTED_B, SUBMITTED_B
from .child.ledger import unframe
from .child.messages import LaneClaimed, LaneDone, LaneEnd, LaneSpec, StopLane
from .waiting import CancelSignal

if TYPE_CHECKING:
    from ..protocol.store import Delivery
    from .pool import WarmProcess

POLL_SECONDS = 0.2  # how often the main process reads the ledger and its drain and abort flags


class LaneHost:
    """What the worker's main process does as the lane reports (see ``Worker``)."""

    def lane_claimed(
        self, task_id: int, token: str, member: str, fields: dict[bytes, bytes], stop: Callable[[], None]
    ) -> Any:
        """A claim the child runs (or ran); returns what the other calls get back."""
        raise NotImplementedError

    def lane_done(self, held: Any, accepted: Delivery, summary: dict[str, Any], wall: float) -> None:
        """The child delivered the task's result (``accepted``: what Redis made of it); ``summary``:
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
        records, self._rest = unframe(b"".join(chunks))
        for record in records:
            self.apply(record)

    def apply(self, record: LaneClaimed | LaneDone) -> None:
        if isinstance(record, LaneClaimed):
            pairs = ((SUBMITTED_B, record.submitted), (STARTED_B, record.started))
            fields = {name: value for name, value in pairs if value is not None}
            cancel = CancelSignal()
            held = self.host.lane_claimed(record.task_id, record.token, record.member, fields, cancel.set)
            self.running[record.token] = (held, cancel)
        else:
            entry = self.running.pop(record.token, None)
            if entry is None:  # cannot happen while records keep their order: nothing to count
                return
            held, cancel = entry
            cancel.close()
            self.host.lane_done(held, record.accepted, record.summary, record.wall)

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
        proc.conn.send_message(spec)
    except OSError:
        return LaneEnd([], [])
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
                return LaneEnd([], [])
            if proc.conn.fileno() in events:
                try:
                    message = proc.conn.recv_message()
                except (EOFError, OSError):
                    ledger.read()
                    proc.kill()
                    ledger.end()
                    host.lane_gone(spec.claim["token_prefix"])
                    return LaneEnd([], [])
                if isinstance(message, LaneEnd):
                    ledger.read()
                    if message.undelivered is not None:
                        held, cancel = ledger.running.popitem()[1]
                        cancel.close()
                        host.lane_undelivered(held, message.undelivered)
                    ledger.end()  # a task it claimed and did not finish (Redis away, or a bug)
                    return message
                if not isinstance(message, LaneClaimed | LaneDone):
                    raise TypeError(f"a lane sent {type(message).__name__}")
                ledger.apply(message)  # a record: the ledger was full
            if not stopping and host.lane_should_stop():
                stopping = True
                _ask_to_stop(proc, host)
    finally:
        for _, cancel in ledger.running.values():
            cancel.close()


def _ask_to_stop(proc: WarmProcess, host: LaneHost) -> None:
    try:
        proc.conn.send_message(StopLane())
    except OSError:
        return  # the child is gone: the next read says so
    host.lane_interrupt()
