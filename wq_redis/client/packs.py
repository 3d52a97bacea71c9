"""Which calls the manager folds into packs, and how many per pack (the wire format of a
pack is protocol/packing.py).

A pack holds about ``PACK_SECONDS`` of work at its function's recent pace, so a pack never
holds long tasks back from idle workers: a function not seen finishing yet, or a slow one,
is never packed.  Only calls that a worker runs in a batch are packed (``packable``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..protocol.fields import (
    ARGS,
    CATEGORY,
    FUNCTION,
    FUNCTION_B,
    MAX_RETRIES,
    MEASURED_B,
    PACK_ARGS,
    PACK_SIZE,
    SPEC,
    SUBMITTED,
)
from ..protocol.pace import Pace
from ..protocol.packing import dump
from .submit_buffer import ROW_FIELDS, Row
from .task import PythonTask, Task

PACK_TASKS = 256  # members of one pack, at most
PACK_SECONDS = 0.005  # ... and about this much work at the function's pace
PACK_ARG_BYTES = 1024  # larger arguments travel in a task of their own
SAMPLES_TRUSTED = 16  # after this many results of a function, its pace is sampled 1 in SAMPLE_EVERY
SAMPLE_EVERY = 16
PACE_WEIGHT = 0.25  # weight of the newest wall time in a function's pace (a moving average)
_SHARED_FIELDS = (SUBMITTED, SPEC, FUNCTION, MAX_RETRIES, CATEGORY)  # what a pack's members share
_PACKABLE_FIELDS = frozenset(_SHARED_FIELDS) | {ARGS}  # ... and their own arguments: nothing else


def packable(task: Task, fields: dict[str, Any]) -> bool:
    """A call a worker can run in a batch: a PythonTask with nothing but a function, small
    arguments and shared settings (no files, time limits, environment or signature)."""
    spec = task._spec
    return (
        isinstance(task, PythonTask)
        and not spec.inputs
        and not spec.outputs
        and not spec.output_dirs
        and not spec.env
        and not spec.running_time_max
        and not spec.end_time
        and fields.keys() <= _PACKABLE_FIELDS
        and len(fields.get(ARGS, b"")) <= PACK_ARG_BYTES
    )


class PackPlanner:
    """How many calls of a function go in one pack, from the wall time of its results."""

    def __init__(self) -> None:
        self._pace: dict[bytes, Pace] = {}  # function digest -> its calls' pace
        self._seen: dict[bytes, int] = {}

    def observe(self, fields: dict[bytes, bytes]) -> None:
        """Fold a finished task's wall time into its function's pace."""
        digest = fields.get(FUNCTION_B)
        meas = fields.get(MEASURED_B)
        if digest is None or meas is None:
            return
        seen = self._seen.get(digest, 0)
        self._seen[digest] = seen + 1
        if seen >= SAMPLES_TRUSTED and seen % SAMPLE_EVERY:
            return
        try:
            wall = float(json.loads(meas)["wall_time"])
        except (ValueError, KeyError, TypeError):
            return
        pace = self._pace.get(digest)
        if pace is None:
            pace = self._pace[digest] = Pace(PACE_WEIGHT)
        pace.record(1, wall)

    def size(self, digest: bytes) -> int:
        """Members per pack for calls of ``digest`` (1: not packed)."""
        pace = self._pace.get(digest)
        return 1 if pace is None else max(1, pace.calls_within(PACK_SECONDS, PACK_TASKS))

    def pack(
        self, rows: Sequence[Row], tasks: Sequence[Task], new_id: Callable[[], int]
    ) -> tuple[list[Row], dict[int, list[int]]]:
        """``rows`` (of ``tasks``) with packable calls that share everything but their
        arguments folded into packs (ids from ``new_id()``), in the order of their first
        member; also each pack's member ids."""
        out: list[Row] = []
        packs: dict[int, list[int]] = {}
        sizes: dict[bytes, int] = {}
        open_packs: dict[tuple[Any, ...], list[Row]] = {}

        def close(key: tuple[Any, ...]) -> None:
            members = open_packs.pop(key)
            if len(members) == 1:
                out.append(members[0])
                return
            _, member, priority, fields = members[0]
            pack_id = new_id()
            pack_fields: dict[str, Any] = {name: fields[name] for name in _SHARED_FIELDS if name in fields}
            pack_fields[PACK_SIZE] = len(members)
            pack_fields[PACK_ARGS] = dump([(m[0], m[ROW_FIELDS].get(ARGS, b"")) for m in members])
            out.append((pack_id, member, priority, pack_fields))
            packs[pack_id] = [m[0] for m in members]

        for row, task in zip(rows, tasks):
            fields = row[ROW_FIELDS]
            digest = fields.get(FUNCTION)
            if digest is None:
                size = 1
            else:
                known = sizes.get(digest)
                size = known if known is not None else sizes.setdefault(digest, self.size(digest))
            if size <= 1 or not packable(task, fields):
                out.append(row)
                continue
            key = (row[1], row[2], fields.get(SPEC), digest, fields.get(MAX_RETRIES), fields.get(CATEGORY))
            members = open_packs.get(key)
            if members is None:
                members = open_packs[key] = []
            members.append(row)
            if len(members) >= size:
                close(key)
        for key in list(open_packs):
            close(key)
        return out, packs
