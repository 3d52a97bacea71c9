"""Cancelling: ``cancel_by_taskid`` and ``cancel_by_tasktag`` (and, through them, the
helpers' and ``cancel_by_category``'s cancels).

cancel.lua removes a waiting task from its ready queue, or marks a running one so its
worker kills it, and answers with the task's hash as it was.  A packed task is cancelled
within its pack (the pack runs on without it); a pack's own id, as a tag or category scan
finds it, cancels all of its members.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..protocol.fields import ATTEMPTS_B, HOST_B, PACK_SIZE_B, WORKER_B
from ..protocol.packing import member_ids
from .queue_state import QueueState
from .task import Task
from .wire import task_from_fields

log = logging.getLogger("wq_redis.client.queue")

KEPT_AFTER_CANCEL = (ATTEMPTS_B, WORKER_B, HOST_B)  # the fields a cancelled task keeps


class Cancelling(QueueState):
    """Cancelling tasks by id or tag, whether waiting, running, or finished but not returned."""

    def cancel_by_taskid(self, task_id: int) -> Task | None:
        """Cancel a waiting, running or finished-but-not-returned task; returns it, or None."""
        cancelled = self._cancel([task_id])
        return cancelled[0] if cancelled else None

    def cancel_by_tasktag(self, tag: str) -> list[Task]:
        """Cancel every waiting or running task with ``tag``; returns them."""
        self._send_buffered()
        found = [i for i, t in self._books.results.items() if t.tag == tag]
        return self._cancel(found + self._redis.call(lambda: self._store.ids_with_tag(tag)))

    def _cancel(self, task_ids: Sequence[int]) -> list[Task]:
        """Cancel ``task_ids`` in one round trip (cancel.lua); the tasks cancelled.  A task
        that finished meanwhile is handed back as it is."""
        books = self._books
        self._send_buffered()
        self._drained = False  # the next wait asks at once: maybe nothing is outstanding now
        out = []
        task_ids = list(dict.fromkeys(task_ids))
        local = {i: books.results.pop(i) for i in task_ids if i in books.results}
        # a packed task is cancelled within its pack; a pack's id (from a tag or category
        # scan) cancels all of its members
        requests = list(dict.fromkeys(books.cancel_request(i) for i in task_ids if i not in local))
        answers = dict(zip(requests, self._redis.call(lambda: self._store.cancel(requests))))
        found: list[tuple[int, Task, dict[bytes, bytes] | None]]
        for task_id in task_ids:
            if task_id in local:
                found = [(task_id, local[task_id], None)]  # already finished: handed back as it is
            else:
                request = books.cancel_request(task_id)
                fields = answers.get(request)
                if not fields:
                    # not in Redis (any more): cancelled by this call re-sent after a lost
                    # reply, or lost with Redis' data; if it is ours, it is cancelled here
                    if not books.waits_for(task_id):
                        continue
                    fields = {}
                    ids = [task_id]
                # a whole pack (never with a secret: this manager made none, so it reads none)
                elif PACK_SIZE_B in fields and request[1] is None and self._signer is None:
                    try:
                        ids = member_ids(fields)
                    except Exception as exc:
                        log.warning(
                            "queue %r: cancelled pack %d has unreadable members (%r)", self.name, request[0], exc
                        )
                        ids = books.packs.get(request[0], [])
                    books.packs.pop(request[0], None)
                else:
                    ids = [task_id]
                found = []
                for i in ids:
                    books.adopted.discard(i)
                    task = books.submitted.pop(i, None)
                    if task is None:
                        try:
                            task = task_from_fields(i, fields)
                        except Exception as exc:  # a stranger's task, or a damaged one
                            log.warning("queue %r: cancelled task %d has an unreadable spec (%r)", self.name, i, exc)
                            task = Task("<unreadable task spec>")
                    found.append((i, task, fields))
            for found_id, task, fields in found:
                if fields is not None:
                    task._id = found_id
                    task._fields = {k: v for k, v in fields.items() if k in KEPT_AFTER_CANCEL}
                books.pack_of.pop(found_id, None)
                books.cancelled.add(found_id)
                books.categories.cancelled(task)
                out.append(task)
        return out
