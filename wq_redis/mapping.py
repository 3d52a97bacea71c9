"""``WorkQueue.map``: stream an iterable through the queue, results in input order."""

from __future__ import annotations

import itertools
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from .task import PythonTask

if TYPE_CHECKING:
    from .manager import WorkQueue

SUBMIT_BATCH = 1000  # tasks per submit round trip
MAX_IN_FLIGHT = 20_000  # submitted but not yet returned, so a huge map stays bounded in memory


class ChunkRunner:
    """Calls ``func`` on each item of a chunk; one pickle per map call, cached by the worker."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func

    def __call__(self, items: list[Any]) -> list[Any]:
        return [self.func(item) for item in items]


def _chunks(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(iterable)
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def _progress(enabled: bool | None, total: int | None) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress("map", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False)
    progress.start()
    progress.add_task("map", total=total)
    return progress


def map_tasks(queue: "WorkQueue", func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int,
              progress: bool | None) -> list[Any]:
    if chunksize < 1:
        raise ValueError("chunksize must be at least 1")
    total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    runner = ChunkRunner(func) if chunksize > 1 else func
    bar = _progress(progress, total)
    slots: list[Any] = []  # per task: its output once back
    sizes: list[int] = []  # per task: items in its chunk
    pending: dict[int, int] = {}  # task id -> slot
    try:
        for batch in _chunks(_chunks(iterable, chunksize) if chunksize > 1 else iterable, SUBMIT_BATCH):
            while len(pending) + len(batch) > MAX_IN_FLIGHT:
                _collect(queue, pending, slots, bar, chunksize, block=True)
            ids = queue.submit_many([PythonTask(runner, item) for item in batch])
            for task_id, item in zip(ids, batch):
                pending[task_id] = len(slots)
                slots.append(None)
                sizes.append(len(item) if chunksize > 1 else 1)
            _collect(queue, pending, slots, bar, chunksize, block=False)
        while pending:
            _collect(queue, pending, slots, bar, chunksize, block=True)
    finally:
        if bar is not None:
            bar.stop()
        if pending:  # interrupted: do not leave our tasks running for nobody
            queue._cancel(list(pending))
    if chunksize == 1:
        return slots
    # a chunk that failed as a whole fills each of its items' places with its error
    return [x for chunk, n in zip(slots, sizes) for x in (chunk if isinstance(chunk, list) else [chunk] * n)]


def _collect(queue: "WorkQueue", pending: dict[int, int], slots: list[Any], bar: Any, chunksize: int,
             block: bool) -> None:
    """Move finished map tasks into their slots; with ``block``, wait for at least one."""
    while True:
        found = 0
        for task_id in [i for i in queue._results if i in pending]:
            task = queue._take_result(task_id)
            slots[pending.pop(task_id)] = task.output if task is not None else None
            found += 1
        if bar is not None and found:
            bar.advance(bar.task_ids[0], found * chunksize)
        if found or not block or not pending:
            return
        if not queue._retrieve():
            queue._store.wait_done(1.0)
