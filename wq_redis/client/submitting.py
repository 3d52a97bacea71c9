"""Submitting: a task's way from ``submit`` to Redis.

Each task is checked and encoded into hash fields (wire.py; input files staged by
files.py), given its ready queue from its resources or its category's (``_placement``),
an id from a block reserved in Redis, and signed when the queue has a secret.  ``submit``
leaves the row in the submit buffer (submit_buffer.py), whose thread sends it with
whatever else was submitted meanwhile; ``submit_many`` sends its rows at once, packing
short calls of a known function several to a hash (packs.py).  Function bodies are stored
before the tasks that need them: a worker must find the function of any task it claims.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from ..protocol import gcpause
from ..protocol.fields import SIGNATURE
from ..protocol.resources import DEFAULT_CORES, RESOURCE_NAMES, Request, queue_member
from ..protocol.store import QueueStateLost, Submitted
from .queue_state import QueueState, some_ids
from .submit_buffer import Row
from .task import Task
from .wire import encode_task

log = logging.getLogger("wq_redis.client.queue")

ID_BLOCK = 1024  # task ids reserved per round trip
PLACEMENTS_KEPT = 4096  # memoized (category, resources, tag) placements; more are a sign of per-task values
FUNCTION_TTL_SECONDS = 7 * 24 * 3600  # a stored function outlives its last submit by this much
FUNCTION_REFRESH_SECONDS = 3600  # how often a manager re-stores (and re-times) a function it uses


def _bytes_fields(fields: Mapping[str, Any]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


class Submitting(QueueState):
    """``submit`` and ``submit_many``, and the steps of encoding, placing and sending tasks."""

    def _placement(self, task: Task) -> tuple[Request, str]:
        """The task's resolved request and its ready queue ``CLASS|TAG`` (memoized: most
        tasks of a queue share a handful of (category, request, tag) combinations)."""
        spec = task._spec
        key = (spec.category, spec.cores, spec.memory, spec.disk, spec.gpus, spec.tag)
        found = self._placements.get(key)
        if found is None:
            category = self._categories.get(spec.category, {})
            fallback = self._categories.get("default", {})
            values = {}
            for name in RESOURCE_NAMES:
                value = getattr(spec, name)
                if value is None:
                    value = category.get(name, fallback.get(name, DEFAULT_CORES if name == "cores" else 0))
                values[name] = value
            request = Request(**values)
            if len(self._placements) >= PLACEMENTS_KEPT:
                self._placements.clear()
            found = self._placements[key] = (request, queue_member(request, spec.tag))
        return found

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
        fields, bodies, request, member = self._encode(task)
        self._upload_functions(bodies)
        row = self._row(task, request, member, fields)
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
        with gcpause.paused(), self._functions.one_call():
            encoded = [self._encode(task) for task in tasks]
        bodies: dict[str, bytes] = {}
        for _, needed, _, _ in encoded:
            bodies.update(needed)
        self._upload_functions(bodies)
        self._redis.call(lambda: self._files.flush(self._store))
        with gcpause.paused():
            rows = [
                self._row(task, request, member, fields) for task, (fields, _, request, member) in zip(tasks, encoded)
            ]
            packs: dict[int, list[int]] = {}
            # a signature is per task, and enforced limits are watched per task: neither is packed
            if self._signer is None and not self.enforce_limits and len(rows) > 1:
                rows, packs = self._packer.pack(rows, tasks, self._next_id)
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
            for task in tasks:
                submitted[task._id] = task
            books.categories.submitted(list(tasks))
        if lost is not None:
            self._recover_lost_state(lost.seen)
        return cast("list[int]", [task._id for task in tasks])  # each has the id _row gave it

    def _encode(self, task: Task) -> tuple[dict[str, Any], dict[str, bytes], Request, str]:
        """Check ``task`` and turn it into hash fields (nothing is queued or reserved yet)."""
        if not isinstance(task, Task):
            raise TypeError(f"submit takes Task or PythonTask objects, got {type(task).__name__}")
        if task._id is not None and task._id in self._books.submitted:
            raise ValueError(f"task {task._id} is already submitted")
        request, member = self._placement(task)
        fields, bodies = self._encode_fields(task, request)
        return fields, bodies, request, member

    def _encode_fields(self, task: Task, request: Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        self._files.last_inputs_bytes = 0
        fields, bodies = encode_task(task, request, self._functions, self.enforce_limits, self._files)
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

    def _row(self, task: Task, request: Request, member: str, fields: dict[str, Any]) -> Row:
        return self._signed_row(task, self._next_id(), member, fields)

    def _signed_row(self, task: Task, task_id: int, member: str, fields: dict[str, Any]) -> Row:
        task._id, task._fields = task_id, {}
        if self._signer is not None:
            fields[SIGNATURE] = self._signer.sign_task(task_id, _bytes_fields(fields))
        return task_id, member, task._spec.priority, fields
