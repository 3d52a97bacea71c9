"""``WorkQueue.wait_async``: ``wait`` for asyncio programs."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .codes import WORK_QUEUE_WAITFORTASK
from .seam import QueueSeam

if TYPE_CHECKING:
    from .queue import WorkQueue
    from .task import Task

POLL_SECONDS = 0.5  # longest blocking wait in a worker thread before the loop looks again


async def wait_async(queue: WorkQueue, timeout: float = WORK_QUEUE_WAITFORTASK) -> Task | None:
    """``queue.wait(timeout)`` without blocking the event loop: the queue is read in the
    loop's thread (a quick round trip), and only the blocking wait for a completion runs in
    a thread, so queue objects are never used by two threads at once."""
    loop = asyncio.get_running_loop()
    seam = QueueSeam(queue)
    deadline = None if timeout is None or timeout < 0 else loop.time() + timeout
    while True:
        task = queue.wait(0)
        if task is not None:
            return task
        if seam.nothing_to_wait_for():  # as of the wait(0) just made
            return None
        remaining = POLL_SECONDS if deadline is None else min(deadline - loop.time(), POLL_SECONDS)
        if remaining <= 0:
            return None
        await loop.run_in_executor(None, seam.wait_for_completion, remaining)
