"""``WorkQueue.map``, ``pair`` and ``tree_reduce``: Work Queue's helpers, streamed.

``map`` and ``pair`` submit in batches while results come back (at most ``MAX_IN_FLIGHT``
tasks outstanding, so a huge input stays bounded in memory) and return results in input
order; a failed call's slot holds its exception, as in Work Queue.  ``tree_reduce``
submits each chunk as soon as its inputs are ready instead of level by level.  All three
show a progress bar on stderr when it is a terminal (``progress=True``/``False`` forces it).
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any

import cloudpickle

from .errors import task_exception
from .seam import QueueSeam
from .task import PythonTask, Task

if TYPE_CHECKING:
    from .queue import WorkQueue

SUBMIT_BATCH = 1000  # tasks per submit round trip
MAX_IN_FLIGHT = 20_000  # submitted but not yet returned, so a huge map stays bounded in memory
# map's chunksize when the caller gives none (as multiprocessing.Pool.map chooses it):
CHUNKS_PER_SLOT = 4  # about this many chunks per task slot (core) of the live workers
SLOTS_WITHOUT_WORKERS = 8  # slots assumed while no worker is connected yet
MAX_CHUNK_ITEMS = 10_000
MAX_CHUNK_BYTES = 1 << 20  # pickled items per chunk, estimated from the first few
SAMPLE_ITEMS = 32
UNSIZED_CHUNKSIZE = 32  # for an iterable without a length (a generator)
BLOCK_SECONDS = 1.0  # longest one blocking retrieve waits for a completion before looking again


def one_core(task: PythonTask) -> PythonTask:
    """A call of map, pair or tree_reduce takes one core: under Work Queue's allocation a
    task that declares nothing gets a whole worker, which would run one call at a time."""
    task.specify_cores(1)
    return task


def _call(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)``, or the exception it raised, as one task per item would give it
    (an exception that cannot be pickled travels as a RuntimeError with its text)."""
    try:
        return func(*args)
    except BaseException as exc:  # SystemExit too, as the worker's child treats it
        try:
            cloudpickle.dumps(exc)
        except Exception:
            return RuntimeError(f"{type(exc).__name__}: {exc}")
        return exc


class ChunkRunner:
    """Calls ``func`` on each item of a chunk; one pickle per map call, cached by the
    worker.  An item that raises gets its exception in its place; the others their values."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func

    def __call__(self, items: list[Any]) -> list[Any]:
        return [_call(self.func, item) for item in items]


class PairChunkRunner:
    """Calls ``func((x, y))`` on each pair of a chunk, one tuple as Work Queue's ``pair``
    passes it (exceptions per pair, as ChunkRunner)."""

    def __init__(self, func: Callable[[tuple[Any, Any]], Any]) -> None:
        self.func = func

    def __call__(self, pairs: list[tuple[Any, Any]]) -> list[Any]:
        return [_call(self.func, pair) for pair in pairs]


def auto_chunksize(queue: WorkQueue, iterable: Iterable[Any]) -> int:
    """A chunksize for ``map`` when the caller gives none, as ``multiprocessing.Pool.map``
    chooses one: about ``CHUNKS_PER_SLOT`` chunks per core of the live workers, at least 1,
    at most ``MAX_CHUNK_ITEMS`` items and about ``MAX_CHUNK_BYTES`` of pickled items per
    chunk; ``UNSIZED_CHUNKSIZE`` for an iterable without a length."""
    if not isinstance(iterable, Sized) or iter(iterable) is iterable:
        return UNSIZED_CHUNKSIZE
    count = len(iterable)
    if count <= 1:
        return 1
    stats = queue.stats
    slots = stats.total_cores or stats.workers_connected or SLOTS_WITHOUT_WORKERS
    size = min(max(1, math.ceil(count / (CHUNKS_PER_SLOT * slots))), MAX_CHUNK_ITEMS)
    if size > 1:
        sample = list(itertools.islice(iter(iterable), SAMPLE_ITEMS))
        try:
            per_item = len(cloudpickle.dumps(sample)) / max(len(sample), 1)
        except Exception:  # not picklable here: the submit will say so
            return size
        size = max(1, min(size, int(MAX_CHUNK_BYTES // max(per_item, 1))))
    return size


def _chunks(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(iterable)
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def _chunk_calls(items: Iterable[Any], size: int, sizes: list[int]) -> Iterator[tuple[list[Any]]]:
    """Chunks as one-argument calls, recording each chunk's length in ``sizes``."""
    for chunk in _chunks(items, size):
        sizes.append(len(chunk))
        yield (chunk,)


def _progress(enabled: bool | None, total: int | None, label: str) -> Any:
    """A rich progress bar on stderr (None when off); default on when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress(
        label, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=False
    )
    progress.start()
    progress.add_task(label, total=total)
    return progress


def _advance(bar: Any, amount: int) -> None:
    if bar is not None and amount:
        bar.advance(bar.task_ids[0], amount)


def _finished(queue: WorkQueue, pending: dict[int, Any], block: bool) -> list[tuple[Any, Task | None]]:
    """Take the finished tasks among ``pending`` (id -> what the caller keeps for it); with
    ``block``, wait until there is at least one."""
    seam = QueueSeam(queue)
    while True:
        done = [(pending.pop(i), seam.take_result(i)) for i in seam.finished_among(pending)]
        if done or not block or not pending:
            return done
        seam.retrieve(block=BLOCK_SECONDS if seam.drained else 0.0)  # blocks only when nothing is left


def _stream(
    queue: WorkQueue,
    func: Callable[..., Any],
    calls: Iterable[tuple[Any, ...]],
    weight: Callable[[tuple[Any, ...]], int],
    bar: Any,
) -> list[Any]:
    """Run ``func(*args)`` for each ``args`` of ``calls``; the outputs, in order."""
    slots: list[Any] = []
    pending: dict[int, tuple[int, int]] = {}  # task id -> (slot, items it stands for)

    def collect(block: bool) -> None:
        for (slot, items), task in _finished(queue, pending, block):
            slots[slot] = task.output if task is not None else None
            _advance(bar, items)

    try:
        for batch in _chunks(calls, SUBMIT_BATCH):
            while len(pending) + len(batch) > MAX_IN_FLIGHT:
                collect(block=True)
            ids = queue.submit_many([one_core(PythonTask(func, *args)) for args in batch])
            for task_id, args in zip(ids, batch):
                pending[task_id] = (len(slots), weight(args))
                slots.append(None)
            collect(block=False)
        while pending:
            collect(block=True)
    finally:
        if bar is not None:
            bar.stop()
        if pending:  # interrupted: do not leave our tasks running for nobody
            QueueSeam(queue).cancel(list(pending))
    return slots


def _flatten(outputs: list[Any], sizes: list[int]) -> list[Any]:
    """Chunk outputs to item outputs; a chunk that failed as a whole fills each of its
    items' places with its error."""
    return [x for chunk, n in zip(outputs, sizes) for x in (chunk if isinstance(chunk, list) else [chunk] * n)]


def _length(*iterables: Any) -> int | None:
    if all(isinstance(i, Sized) for i in iterables):
        return math.prod(len(i) for i in iterables)
    return None


def map_tasks(
    queue: WorkQueue,
    func: Callable[[Any], Any],
    iterable: Iterable[Any],
    chunksize: int | None,
    progress: bool | None,
) -> list[Any]:
    if chunksize is None:
        chunksize = auto_chunksize(queue, iterable)
    if chunksize < 1:
        raise ValueError("chunksize must be at least 1")
    bar = _progress(progress, _length(iterable), "map")
    if chunksize == 1:
        return _stream(queue, func, ((item,) for item in iterable), lambda args: 1, bar)
    sizes: list[int] = []
    chunks = _chunk_calls(iterable, chunksize, sizes)
    return _flatten(_stream(queue, ChunkRunner(func), chunks, lambda args: len(args[0]), bar), sizes)


def pair_tasks(
    queue: WorkQueue,
    func: Callable[[tuple[Any, Any]], Any],
    seq1: Iterable[Any],
    seq2: Iterable[Any],
    chunksize: int,
    progress: bool | None,
) -> list[Any]:
    if chunksize < 1:
        raise ValueError("chunksize must be at least 1")
    bar = _progress(progress, _length(seq1, seq2), "pair")
    pairs = itertools.product(seq1, seq2)
    if chunksize == 1:
        return _stream(queue, func, ((pair,) for pair in pairs), lambda args: 1, bar)  # one tuple per call
    sizes: list[int] = []
    chunks = _chunk_calls(pairs, chunksize, sizes)
    return _flatten(_stream(queue, PairChunkRunner(func), chunks, lambda args: len(args[0]), bar), sizes)


def reduce_tree(
    queue: WorkQueue, func: Callable[[list[Any]], Any], seq: Iterable[Any], chunksize: int, progress: bool | None
) -> Any:
    """Level 0 is ``seq``; element ``i`` of level ``L+1`` is ``func`` of chunk ``i`` of
    level ``L``.  A chunk is submitted once all its inputs are known."""
    if chunksize < 2:
        raise ValueError("chunksize must be at least 2 for tree_reduce")
    levels: list[list[Any]] = [list(seq)]
    if not levels[0]:
        raise ValueError("tree_reduce of an empty sequence")
    while len(levels[-1]) > 1:
        levels.append([None] * math.ceil(len(levels[-1]) / chunksize))
    if len(levels) == 1:
        return levels[0][0]
    ready = [[0] * len(level) for level in levels]  # inputs known, per chunk of the next level
    bar = _progress(progress, sum(len(level) for level in levels[1:]), "tree_reduce")
    pending: dict[int, tuple[int, int]] = {}  # task id -> (level, index)

    def submit(chunks: list[tuple[int, int]]) -> None:
        tasks = [one_core(PythonTask(func, levels[lv - 1][i * chunksize : (i + 1) * chunksize])) for lv, i in chunks]
        for start in range(0, len(tasks), SUBMIT_BATCH):
            ids = queue.submit_many(tasks[start : start + SUBMIT_BATCH])
            pending.update(zip(ids, chunks[start : start + SUBMIT_BATCH]))

    try:
        submit([(1, i) for i in range(len(levels[1]))])
        while True:
            newly_ready = []
            for (level, index), task in _finished(queue, pending, block=True):
                assert task is not None
                error = task_exception(task)
                if error is not None:
                    raise error
                levels[level][index] = task.output
                _advance(bar, 1)
                if level == len(levels) - 1:
                    return levels[level][0]
                parent = index // chunksize
                ready[level][parent] += 1
                if ready[level][parent] == min(chunksize, len(levels[level]) - parent * chunksize):
                    newly_ready.append((level + 1, parent))
            submit(newly_ready)
    finally:
        if bar is not None:
            bar.stop()
        if pending:
            QueueSeam(queue).cancel(list(pending))
