"""Submitting: a task's way from ``submit`` to Redis.

Each task is checked and encoded into hash fields (wire.py; input files staged by
files.py), given its ready queue, its resource class (allocating.py: ``_placement``),
an id from a block reserved in Redis, and signed when the queue has a secret.  ``submit``
leaves the row in the submit buffer (submit_buffer.py), whose thread sends it with
whatever else was submitted meanwhile; ``submit_many`` sends its rows at once, packing
short calls of a known function several to a hash (packs.py).  Function bodies are stored
before the tasks that need them: a worker must find the function of any task it claims.

A task whose input file or directory is missing or unreadable is not refused: as in Work
Queue (which finds out when it dispatches the task, before sending it), it takes its id,
is never sent, and ``wait`` returns it failed with ``INPUT_MISSING`` and return status -1.
Only our own checks (``FileTooLarge``, a ``ValueError``) raise at submit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from ..protocol import gcpause
from ..protocol.codes import NOT_RUN_STATUS, Result
from ..protocol.fields import SIGNATURE
from ..protocol.store import QueueStateLost, Submitted
from .queue_state import QueueState, some_ids
from .recovery import failed_locally
from .submit_buffer import Row
from .task import Task
from .wire import encode_task

log = logging.getLogger("wq_redis.client.queue")

ID_BLOCK = 1024  # task ids reserved per round trip
FUNCTION_TTL_SECONDS = 7 * 24 * 3600  # a stored function outlives its last submit by this much
FUNCTION_REFRESH_SECONDS = 3600  # how often a manager re-stores (and re-times) a function it uses


Encoded = tuple[dict[str, Any], dict[str, bytes], str]  # fields, function bodies, queue member


def _bytes_fields(fields: Mapping[str, Any]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


class Submitting(QueueState):
    """``submit`` and ``submit_many``, and the steps of encoding, placing and sending tasks."""

    def _next_id(self) -> int:
        for task_id in self._ids:
            return task_id
        block = self._redis.call(lambda: self._store.reserve_ids(ID_BLOCK, self._books.id_ceiling))
        self._books.reserved(block[-1])
        self._ids = iter(block)
        return next(iter(self._ids))

    def submit(self, task: Task) -> int:
        """Queue ``task``; returns its id at once.  A background thread sends it to Redis
        (with whatever else was submitted meanwhile, one round trip); ``wait`` and every
        other call that reads the queue send it first."""
        if self._buffer.error is not None:
            self._send_buffered()  # an earlier send failed: raises if Redis stays away
        if not isinstance(task, Task) or task._spec.inputs:
            return self.submit_many([task])[0]  # input files are staged and stored first
        fields, bodies, member = self._encode(task)
        self._upload_functions(bodies)
        row = self._row(task, member, fields)
        books = self._books
        books.submitted[row[0]] = task
        books.categories.submitted([task])
        if self._buffer.add(row):
            self._send_buffered()
        return row[0]

    def submit_many(self, tasks: Sequence[Task]) -> list[int]:
        """Queue many tasks in one round trip (with anything ``submit`` buffered before);
        returns their ids in order.  If Redis cannot take them, raises: they are not queued."""
        # the loops over the tasks pause the cyclic collector (gcpause); the calls to Redis do not
        missing: list[tuple[Task, str]] = []  # tasks whose inputs cannot be read, and why
        with gcpause.paused(), self._functions.one_call():
            encoded = [self._encode_unless_missing(task, missing) for task in tasks]
        if missing:  # rare: those tasks are not sent (see the module doc)
            return self._submit_with_missing_inputs(tasks, encoded, missing)
        return self._send_many(tasks, cast("list[Encoded]", encoded))

    def _send_many(
        self, tasks: Sequence[Task], encoded: Sequence[Encoded | None], some_missing: bool = False
    ) -> list[int]:
        """Send the encoded ``tasks``; with ``some_missing``, a None among them is a task
        not to send (its inputs are missing) that takes its id in order all the same.
        Raises as ``submit_many`` does."""
        bodies: dict[str, bytes] = {}
        for item in encoded:
            if item is not None:
                bodies.update(item[1])
        self._upload_functions(bodies)
        self._redis.call(lambda: self._files.flush(self._store))
        sent = tasks
        with gcpause.paused():
            if some_missing:
                rows, sent = self._rows_around_missing(tasks, encoded)
            else:
                rows = [
                    self._row(task, member, fields)
                    for task, (fields, _, member) in zip(tasks, cast("Sequence[Encoded]", encoded))
                ]
            packs: dict[int, list[int]] = {}
            # a signature is per task, and enforced limits are watched per task: neither is packed
            if self._signer is None and not self.enforce_limits and len(rows) > 1:
                rows, packs = self._packer.pack(rows, sent, self._next_id)
        lost: QueueStateLost | None = None
        try:
            self._redis.call(lambda: self._buffer.send_now(rows))
        except QueueStateLost as exc:  # nothing queued: they are resubmitted below, with all the others held
            lost = exc
        except BaseException:
            for task in tasks:
                task._id = None
            raise
        with gcpause.paused():
            books = self._books
            books.record_packs(packs)
            # _row gave every task its id: a typed local says so for the loop (a cast there is per task)
            submitted: dict[Any, Task] = books.submitted
            for task in sent:
                submitted[task._id] = task
            books.categories.submitted(list(tasks))
        if lost is not None:
            self._recover_lost_state(lost.seen)
        return cast("list[int]", [task._id for task in tasks])  # each has the id _row gave it

    def _submit_with_missing_inputs(
        self, tasks: Sequence[Task], encoded: list[Encoded | None], missing: list[tuple[Task, str]]
    ) -> list[int]:
        """``submit_many`` where the inputs of the ``missing`` tasks cannot be read: the others
        are sent; those take their ids and are held at once for ``wait``, failed as Work Queue
        fails them (``INPUT_MISSING``, return status -1, never run)."""
        ids = self._send_many(tasks, encoded, some_missing=True)
        books = self._books
        for task, error in missing:
            task_id = task._id
            assert task_id is not None  # given in order by _rows_around_missing
            failed_locally(task, task_id, error, Result.INPUT_MISSING, NOT_RUN_STATUS)
            books.failed_unsent(task_id, task)
        return ids

    def _rows_around_missing(
        self, tasks: Sequence[Task], encoded: Sequence[Encoded | None]
    ) -> tuple[list[Row], list[Task]]:
        """The rows of the tasks to send, and those tasks; the others (None) get their ids
        in order, with no row."""
        rows: list[Row] = []
        sent: list[Task] = []
        for task, item in zip(tasks, encoded):
            if item is None:
                task._id = self._next_id()
                continue
            fields, _, member = item
            rows.append(self._row(task, member, fields))
            sent.append(task)
        return rows, sent

    def _encode_unless_missing(self, task: Task, missing: list[tuple[Task, str]]) -> Encoded | None:
        """``_encode``, or None (and ``task`` in ``missing``, with why) when an input file or
        directory of it cannot be read: the files are the only thing encoding reads from
        disk, so an ``OSError`` here is that, never our own size checks (``ValueError``)."""
        try:
            return self._encode(task)
        except OSError as exc:
            missing.append((task, str(exc)))
            return None

    def _encode(self, task: Task) -> Encoded:
        """Check ``task`` and turn it into hash fields (nothing is queued or reserved yet)."""
        if not isinstance(task, Task):
            raise TypeError(f"submit takes Task or PythonTask objects, got {type(task).__name__}")
        if task._id is not None and task._id in self._books.submitted:
            raise ValueError(f"task {task._id} is already submitted")
        member = self._placement(task)
        fields, bodies = self._encode_fields(task)
        return fields, bodies, member

    def _encode_fields(self, task: Task) -> tuple[dict[str, Any], dict[str, bytes]]:
        self._files.last_inputs_bytes = 0
        fields, bodies = encode_task(task, self._functions, self.enforce_limits, self._files)
        self._files.check_task_size(task, fields, bodies)  # what no worker would load
        return fields, bodies

    def _upload_functions(self, bodies: dict[str, bytes]) -> None:
        """Store the function bodies Redis may not have (in this thread, before the tasks:
        a worker must find the function of any task it claims)."""
        now = time.monotonic()
        stale = now - FUNCTION_REFRESH_SECONDS  # stored longer ago: store again (and re-time)
        bodies = {d: b for d, b in bodies.items() if self._uploaded.get(d, stale - 1) < stale}
        if bodies:
            self._redis.call(lambda: self._store.put_functions(bodies, FUNCTION_TTL_SECONDS))
            self._uploaded.update(dict.fromkeys(bodies, now))

    def _send_rows(self, rows: list[Row]) -> Submitted:
        """Queue ``rows`` in Redis (the submit buffer's sending, in whichever thread);
        raises ``QueueStateLost`` when Redis lost the queue's state: nothing was queued."""
        submitted = self._store.submit(rows, self._incarnation)
        self._report_replaced(submitted)
        return submitted

    def _report_replaced(self, submitted: Submitted) -> None:
        if submitted.replaced:
            ids = submitted.replaced
            log.warning(
                "queue %r: the hash of task(s) %s held data that this manager did not write (another client "
                "wrote at ids it was about to use): replaced by the task(s) it submitted",
                self.name,
                some_ids(ids),
            )

    def _send_buffered(self) -> None:
        """Send the tasks ``submit`` buffered, in this thread (waiting out a Redis outage, see
        reconnect.py); should Redis have lost the queue's state, nothing of them was queued,
        and every task held is resubmitted (recovery.py), these ones included."""
        try:
            self._redis.call(self._buffer.flush)
        except QueueStateLost as lost:
            self._recover_lost_state(lost.seen)

    def _row(self, task: Task, member: str, fields: dict[str, Any]) -> Row:
        return self._signed_row(task, self._next_id(), member, fields)

    def _signed_row(self, task: Task, task_id: int, member: str, fields: dict[str, Any]) -> Row:
        task._id, task._fields = task_id, {}
        if self._signer is not None:
            fields[SIGNATURE] = self._signer.sign_task(task_id, _bytes_fields(fields))
        return task_id, member, task._spec.priority, fields
