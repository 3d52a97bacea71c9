"""What the queue's helpers may use of a ``WorkQueue`` beyond its public API.

``Executor`` (executor.py), ``map``/``pair``/``tree_reduce`` (mapping.py) and
``wait_async`` (asyncwait.py) consume finished tasks by id, which ``wait`` cannot do: it
hands out the next one, whoever wanted it.  They go through this seam, and only this
module (with the queue's own parts) reads the queue's private attributes, so the queue
can change its insides without its helpers noticing.  tests/test_architecture_client.py
keeps it so.

Every method is one of the queue's own steps, unchanged: the seam adds no round trip.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .queue import WorkQueue
    from .task import Task


class QueueSeam:
    """The steps of one queue that its helpers use: ``QueueSeam(queue)``."""

    __slots__ = ("_queue",)

    def __init__(self, queue: WorkQueue) -> None:
        self._queue = queue

    def retrieve(self, block: float = 0.0) -> int:
        """Send what ``submit`` buffered, acknowledge what was taken and take a batch of
        finished tasks (one round trip; with ``block``, first wait up to that many seconds
        for a completion); returns how many came back.  They are held until taken."""
        return self._queue._retrieve(block=block)

    @property
    def drained(self) -> bool:
        """Whether the last retrieve emptied the done list: then only a blocking retrieve
        (``retrieve(block=...)``) is worth making before the next completion."""
        return self._queue._drained

    def finished_among(self, wanted: Container[int]) -> list[int]:
        """Ids of the finished tasks held (not yet handed out) that are in ``wanted``."""
        return self._queue._books.finished_among(wanted)

    def take_result(self, task_id: int) -> Task | None:
        """Hand out the finished task ``task_id``, as ``wait`` would (None if not held)."""
        return self._queue._books.take_result(task_id)

    def nothing_to_wait_for(self) -> bool:
        """No finished task is held and none is outstanding (as of the last retrieve)."""
        books = self._queue._books
        return not books.results and books.outstanding() <= 0

    def cancel(self, task_ids: Sequence[int]) -> list[Task]:
        """Cancel these tasks (what ``cancel_by_taskid`` does, for many in one round trip);
        returns the tasks cancelled."""
        return self._queue._cancel(task_ids)

    def wait_for_completion(self, seconds: float) -> None:
        """Block up to ``seconds`` until some task of the queue completes, taking nothing
        (safe in another thread than the queue's user: it touches no state of the queue)."""
        self._queue._store.wait_done(seconds)
