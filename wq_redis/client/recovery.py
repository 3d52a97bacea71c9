"""A manager's books across its own restarts and Redis' losses.

The manager counts its outstanding tasks itself (books.py): those it submitted (the Task
objects) and, after a restart, those it adopted from Redis (ids only).
Nothing that other clients write into Redis (ids pushed into the done list, counters)
changes that count.

**Re-attach** (``_adopt_unfinished``): a new ``WorkQueue(name)`` whose queue may hold tasks
(attach.lua says so: its counters or lists are not empty) adopts every task hash of the
queue that is waiting, running or finished but not retrieved, as submit.lua, claim.lua
and complete.lua write them (state 1, 2 or 3, with a queue member).  Why these and not
the done list or the counters: a task hash with a state is what the scripts themselves
write for a task they queued, and it exists from submit to retrieval, so it names the
waiting and running tasks too, which no list holds in one place; the done list and the
counters are anyone's to write into.  A stranger can still forge such a hash (a client
with write access can do anything to a queue); what it cannot do any more is end one of
this manager's tasks by pushing an id, nor make ``empty()`` true early.

**Redis lost the queue's state** (``_recover_lost_state``): every retrieve returns the
queue's incarnation (attach.lua), and every submit is made in the incarnation the
manager attached to: submit.lua queues nothing in another one (a task queued there would
reach workers without the function body and cached files the manager believes stored,
and fail "function missing").  Either way the manager notices at its next round trip,
whichever sent it (``submit``, ``submit_many``, the submit buffer's thread, a retrieve
carrying buffered tasks); it then attaches again (a new incarnation, the id counter moved
past every id it holds), forgets what it had stored (functions, cached files: they are
gone too), resubmits every task it holds under its own id (the refused ones included:
they are held from the moment ``submit`` returns their id), and fails the adopted tasks
it cannot resubmit (it has no Task object for them), so that each comes back once all
the same.  A resubmitted task keeps its submit stamp (``sub``): where its hash is still
there after all (a false alarm: the incarnation key alone was damaged) submit.lua knows
it as the task's own and queues it no second time.  Until a recovery has resubmitted
everything, the manager's incarnation is PENDING (never accepted by submit.lua), so that
a recovery cut short (Redis away past ``reconnect_timeout``) is run again by the next call.
"""

from __future__ import annotations

import logging
import secrets

from ..protocol.codes import NOT_RUN_STATUS, Result
from ..protocol.fields import ERROR_B, PACK_SIZE_B, RESULT_B, RETURN_STATUS_B, SUBMITTED
from ..protocol.packing import member_ids
from ..protocol.store import QueueStateLost
from .queue_state import QueueState
from .task import Task

log = logging.getLogger("wq_redis.client.queue")

PENDING = ""  # the incarnation of a manager whose recovery has not finished: submit.lua accepts nothing in it
INCARNATION_BYTES = 8  # random bytes naming one attachment of a manager to the queue's state
RECOVERY_ATTEMPTS = 5  # recoveries in a row whose resubmit was refused again (the state lost again meanwhile)


def new_incarnation() -> str:
    return secrets.token_hex(INCARNATION_BYTES)


def failed_locally(
    task: Task, task_id: int, error: str, result: Result = Result.UNKNOWN, return_status: int | None = None
) -> Task:
    """``task`` made a failed task with ``error``, as if a worker had reported it."""
    task._id = task_id
    task._fields = {RESULT_B: b"%d" % result, ERROR_B: error.encode()}
    if return_status is not None:
        task._fields[RETURN_STATUS_B] = b"%d" % return_status
    return task


class Recovering(QueueState):
    """Re-attaching to a queue's unfinished tasks, and recovering from Redis' lost state."""

    def _adopt_unfinished(self) -> None:
        """Adopt the tasks a manager before this one left in the queue (see the module doc)."""
        found = self._redis.call(self._store.unfinished_tasks)
        adopted = 0
        for hash_id, fields in found.items():
            if PACK_SIZE_B in fields:
                try:
                    members = member_ids(fields)
                except Exception as exc:  # a pack not written by wq-redis: its members cannot be named
                    log.warning(
                        "queue %r: task %d looks like a pack but its members cannot be read (%r); not waiting for it",
                        self.name,
                        hash_id,
                        exc,
                    )
                    continue
            else:
                members = [hash_id]
            self._books.adopt(hash_id, members)
            adopted += len(members)
        if adopted:
            log.info("queue %r: re-attached to %d task(s) submitted before this manager started", self.name, adopted)

    def _recover_lost_state(self, seen: str | None) -> None:
        """Redis lost the queue's state (its incarnation is ``seen`` instead of the one this
        manager attached to): attach again and resubmit every task held (see the module doc).
        Should the state be lost again before the resubmit is queued, it starts over; raises
        ``QueueStateLost`` after RECOVERY_ATTEMPTS such tries (the next call tries again)."""
        for _ in range(RECOVERY_ATTEMPTS):
            try:
                self._recover(seen)
                return
            except QueueStateLost as again:
                seen = again.seen
        raise QueueStateLost(seen)

    def _recover(self, seen: str | None) -> None:
        books = self._books
        held = list(books.submitted.values())
        adopted = sorted(books.adopted)
        log.warning(
            "Redis lost the state of queue %r (its incarnation is %s, was %s: restarted without its data, or a "
            "failover to a replica that missed writes): resubmitting the %d task(s) this manager submitted that "
            "have not come back%s",
            self.name,
            "missing" if seen is None else repr(seen),
            "pending" if self._incarnation == PENDING else repr(self._incarnation),
            len(held),
            f"; {len(adopted)} task(s) adopted from an earlier manager cannot be resubmitted and come back failed"
            if adopted
            else "",
        )
        self._incarnation = PENDING  # until everything held is resubmitted (see the module doc)
        incarnation, _ = self._redis.call(lambda: self._store.attach(new_incarnation(), books.id_ceiling))
        self._unacked.clear()  # acknowledging ids of the lost state would do nothing
        self._released.clear()
        self._uploaded.clear()  # the functions and cached files it stored are gone too
        self._files.forget_uploads()
        self._drained = False
        for category in self._allocation:
            self._store_category(category.name)
        self._republish_labels()
        for task_id in adopted:
            books.adopted.discard(task_id)
            books.pack_of.pop(task_id, None)
            books.results[task_id] = failed_locally(
                Task("<task of an earlier manager>"),
                task_id,
                "Redis lost this task (its data was lost before the task finished); it was submitted by an earlier "
                "manager of the queue, so this one cannot submit it again",
            )
        self._resubmit(held, incarnation)

    def _resubmit(self, tasks: list[Task], incarnation: str) -> None:
        """Submit ``tasks`` (held by the manager) again under their own ids, in the queue's new
        ``incarnation``: re-encoded, with their functions and cached files stored again, their
        submit stamps kept (see the module doc); each one alone (not packed), and in place of
        their rows still buffered.  A task that cannot be encoded now (an input file gone
        meanwhile) comes back failed."""
        books = self._books
        rows = []
        bodies: dict[str, bytes] = {}
        for task in tasks:
            task_id = task._id
            assert task_id is not None
            books.unpack(task_id)
            stamp = task.submit_time
            try:
                member = self._placement(task)
                fields, needed = self._encode_fields(task)
                if stamp is not None:
                    fields[SUBMITTED] = task.submit_time = stamp
            except Exception as exc:
                del books.submitted[task_id]
                error = f"Redis lost this task and submitting it again failed: {exc}"
                if isinstance(exc, OSError):  # an input file gone meanwhile: as at submit (submitting.py)
                    failed_locally(task, task_id, error, Result.INPUT_MISSING, NOT_RUN_STATUS)
                else:
                    failed_locally(task, task_id, error)
                books.came_back(task_id, task)
                continue
            bodies.update(needed)
            rows.append(self._signed_row(task, task_id, member, fields))
        self._upload_functions(bodies)
        self._redis.call(lambda: self._files.flush(self._store))
        self._incarnation = incarnation
        try:
            self._redis.call(lambda: self._buffer.send_now(rows, replace=True))
        except BaseException:
            self._incarnation = PENDING  # not resubmitted: the next call recovers again
            raise
        if rows:
            log.warning("queue %r: %d task(s) resubmitted", self.name, len(rows))
