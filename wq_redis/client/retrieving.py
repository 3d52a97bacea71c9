"""Retrieving: a finished task's way from Redis to ``wait``.

One round trip (retrieve.lua) sends what ``submit`` buffered, acknowledges the tasks taken
last time (so Redis may delete them), releases those that were not this manager's, and
takes a batch of finished tasks; with ``block``, it first waits on the wake key that
every completion rings.  The rows taken become finished Task objects held in the books
(books.py) until ``wait`` hands them out.  Nothing read from Redis raises: a result that
cannot be read makes its task come back failed, saying why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..protocol import gcpause
from ..protocol.fields import ERROR_B, RESULT_B, VALUE_B, VALUE_SIGNATURE_B
from ..protocol.signing import SignatureError
from ..protocol.store import Submitted
from .codes import WORK_QUEUE_WAITFORTASK, Result
from .queue_state import QueueState, some_ids
from .recovery import failed_locally
from .task import Task
from .wire import apply_results, task_from_fields, unreadable_result

log = logging.getLogger("wq_redis.client.queue")

RETRIEVE_BATCH = 512  # finished tasks fetched per round trip
# Seconds one blocking retrieve lasts at most, so that a wait looks around now and then: what
# only its retrieve can tell (Redis restarted without the queue's state, or without its scripts,
# and the submit sent in the same round trip was refused) waits this long to be noticed.  An
# idle manager pays one round trip a second for it.
LONGEST_BLOCK = 1.0


class Retrieving(QueueState):
    """``wait`` and ``wait_for_tag``, and the retrieve round trip under them."""

    def wait(self, timeout: float = WORK_QUEUE_WAITFORTASK) -> Task | None:
        """The next finished task, or None after ``timeout`` seconds (-1: wait forever).

        Returns None at once when nothing is outstanding, as Work Queue does.
        """
        return self._wait(timeout, lambda task: True)

    def wait_for_tag(self, tag: str, timeout: float = WORK_QUEUE_WAITFORTASK) -> Task | None:
        """Like ``wait`` but only for tasks with ``tag``; others stay for later ``wait`` calls."""
        return self._wait(timeout, lambda task: task.tag == tag)

    def _wait(self, timeout: float, wanted: Callable[[Task], bool]) -> Task | None:
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        books = self._books
        while True:
            for task_id, task in books.results.items():
                if wanted(task):
                    return books.take_result(task_id)
            remaining = LONGEST_BLOCK if deadline is None else min(deadline - time.monotonic(), LONGEST_BLOCK)
            # The done list was emptied by the last retrieve: any later completion rings the
            # wake key, so block on it and retrieve in the same round trip.
            block = remaining if self._drained and books.outstanding() > 0 and remaining > 0 else 0.0
            if self._retrieve(block=block):
                continue
            if books.outstanding() <= 0:  # nothing more will come
                return None
            if deadline is not None and deadline - time.monotonic() <= 0:
                return None

    def _retrieve(self, max_tasks: int = RETRIEVE_BATCH, block: float = 0.0) -> int:
        """Send the tasks still buffered, acknowledge what was taken last time and take a
        batch of finished tasks; with ``block``, first wait up to that many seconds for a
        completion.  One round trip (retried while Redis is away, see reconnect.py); should
        it show that Redis lost the queue's state, the tasks held are resubmitted."""
        rows, incarnation, submitted = self._redis.call(lambda: self._retrieve_once(max_tasks, block))
        self._report_replaced(submitted)
        with gcpause.paused():  # not while blocked above: other threads' garbage is collected then
            taken = self._take(rows, max_tasks)
        if submitted.lost is not None or incarnation != self._incarnation:
            # the buffered tasks it carried were refused then: they are among those resubmitted
            before = len(self._books.results)
            self._recover_lost_state(incarnation if submitted.lost is None else submitted.lost.seen)
            taken += len(self._books.results) - before  # tasks it could not resubmit come back failed
        return taken

    def _retrieve_once(
        self, max_tasks: int, block: float
    ) -> tuple[list[tuple[int, int, dict[bytes, bytes]]], str | None, Submitted]:
        acked, self._unacked = self._unacked, []
        released, self._released = self._released, []
        try:  # the tasks still buffered go first, in the same round trip
            return self._buffer.flush_into(
                lambda submit: self._store.retrieve(
                    max_tasks,
                    self.keep_results,
                    acked,
                    block,
                    submit,
                    released,
                    read_packs=self._signer is None,
                    incarnation=self._incarnation,
                )
            )
        except Exception:
            self._unacked = acked + self._unacked
            self._released = released + self._released
            raise

    def _take(self, rows: list[tuple[int, int, dict[bytes, bytes]]], max_tasks: int) -> int:
        """Make the retrieved rows of this manager's tasks finished tasks, for ``wait`` to
        hand out; the others are logged and released (never counted, never raised)."""
        acks = list(dict.fromkeys(ack_id for ack_id, _, _ in rows))  # a pack's members share one
        if max_tasks > 0:
            self._drained = len(acks) < max_tasks
        books = self._books
        own: set[int] = set()
        strangers: list[int] = []
        taken = 0
        for ack_id, task_id, fields in rows:
            if task_id == ack_id and task_id in books.packs:  # a pack that came back unreadable
                own.add(ack_id)
                for member_id in books.packs[task_id]:
                    if books.pack_of.get(member_id) == ack_id:
                        taken += self._finished(member_id, dict(fields))
            elif books.owns(ack_id, task_id):
                own.add(ack_id)
                taken += self._finished(task_id, fields)
            else:
                strangers.append(task_id)
        if strangers:
            log.warning(
                "queue %r: ignored %d finished task(s) in the done list that this manager did not submit "
                "(written there by another client?): ids %s",
                self.name,
                len(strangers),
                some_ids(strangers),
            )
        self._unacked += [ack_id for ack_id in acks if ack_id in own]
        self._released += [ack_id for ack_id in acks if ack_id not in own]
        for ack_id in own:
            books.packs.pop(ack_id, None)
        if self._learned or (not rows and self._auto):
            self._publish_learned(everything=not rows)  # claims of automatic categories wait for what they taught
        return taken

    def _finished(self, task_id: int, fields: dict[bytes, bytes]) -> bool:
        """A finished task's results, for ``wait`` to hand out; False if it had them already.
        Never raises: what cannot be read makes the task come back failed, saying why."""
        books = self._books
        if task_id in books.returned or task_id in books.results:
            return False  # handed out again: a lost reply, or Redis lost its last writes
        try:
            task = self._finished_task(task_id, fields)
        except Exception as exc:  # a last resort: the task comes back, failed, whatever it holds
            log.warning(
                "queue %r: the result of task %d cannot be read (%r); it comes back failed", self.name, task_id, exc
            )
            held = books.submitted.pop(task_id, None)
            task = held if held is not None else Task("<unreadable task>")
            books.adopted.discard(task_id)
            failed_locally(task, task_id, f"its result in Redis cannot be read: {exc!r}")
        books.came_back(task_id, task)
        return True

    def _finished_task(self, task_id: int, fields: dict[bytes, bytes]) -> Task:
        self._packer.observe(fields)
        books = self._books
        books.pack_of.pop(task_id, None)
        task = books.submitted.pop(task_id, None)
        if task is None:  # adopted: rebuilt from its hash
            books.adopted.discard(task_id)
            try:
                task = task_from_fields(task_id, fields)
            except Exception as exc:  # e.g. a spec without its command
                log.warning(
                    "queue %r: task %d has an unreadable spec (%r); it comes back failed", self.name, task_id, exc
                )
                return failed_locally(
                    Task("<unreadable task spec>"), task_id, f"the task's spec in Redis cannot be read: {exc!r}"
                )
        problem = unreadable_result(fields)
        if problem is not None:
            log.warning(
                "queue %r: task %d has an unreadable result (%s); it comes back failed", self.name, task_id, problem
            )
            return failed_locally(task, task_id, f"the task's result in Redis cannot be read: {problem}")
        if self._signer is not None and VALUE_B in fields:
            try:
                self._signer.verify_result(task_id, fields[VALUE_B], fields.get(VALUE_SIGNATURE_B))
            except SignatureError as exc:  # never unpickle what a stranger wrote
                fields = {**fields, RESULT_B: str(int(Result.UNKNOWN)).encode(), ERROR_B: str(exc).encode()}
                del fields[VALUE_B]
        try:
            apply_results(task, task_id, fields)
        except Exception as exc:  # e.g. an output file's local path cannot be written
            task._fields = {
                **task._fields,
                RESULT_B: str(int(Result.OUTPUT_TRANSFER_ERROR)).encode(),
                ERROR_B: f"output file could not be written on the manager: {exc}".encode(),
            }
        self._learn(task)
        return task

    def _flush_acks(self) -> None:
        """Send buffered tasks, and tell Redis the tasks taken so far are ours, so counters
        and memory are current."""
        self._send_buffered()
        if self._unacked or self._released:
            self._retrieve(0)
