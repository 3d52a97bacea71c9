"""Which claimed PythonTasks run as quick calls (a batch in a warm child, or a child's
fast lane), and how many tasks a claim brings to follow each one (``Pace``).  Both the
worker and a child's lane decide this, so it lives in the child package.
"""

from __future__ import annotations

from typing import Any

from ...protocol import pace, packing
from ...protocol.fields import FUNCTION_B, SPEC_B
from ...protocol.serialize import EnvelopeError, task_spec

# Spec entries that need the per-task path (sandbox files, limits watched while it runs).
_NEEDS_OWN_RUN = ("inputs", "outputs", "output_dirs", "running_time_max", "end_time", "enforce")


_quick_specs: dict[bytes | None, dict[str, Any] | None] = {}  # by the "spec" field: tasks of a batch share one


def quick_spec(fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The spec of a task (or pack, see packing.py) that can run in a batch, else None
    (read-only: it is shared)."""
    if FUNCTION_B not in fields or (packing.MEMBERS not in fields and b":" in b"\n".join(fields)):
        return None  # "in:NAME" etc.: input files
    data = fields.get(SPEC_B)
    if data in _quick_specs:
        return _quick_specs[data]
    try:
        spec: dict[str, Any] | None = task_spec(fields)
    except EnvelopeError:
        return None  # the per-task path reports it
    if spec is not None and (spec.get("kind") != "py" or any(spec.get(name) for name in _NEEDS_OWN_RUN)):
        spec = None
    if len(_quick_specs) >= 256:
        _quick_specs.clear()
    _quick_specs[data] = spec
    return spec


BATCH_SECONDS = 0.02  # short tasks are claimed in batches of about this much work
MAX_FOLLOWERS = 255  # tasks that may follow one claimed task on its resources


SLOT_PACE_WEIGHT = 0.5  # a slot's pace follows its newest run closely: the next claim should fit it


class Pace(pace.Pace):
    """The recent seconds per task of a slot, which sets how many tasks a claim may bring
    to follow each one: enough for about BATCH_SECONDS of work, none until a task was seen
    to finish (long tasks are never held back from idle workers)."""

    __slots__ = ()

    def __init__(self, seconds_per_call: float | None = None) -> None:
        super().__init__(SLOT_PACE_WEIGHT, seconds_per_call)

    def followers(self) -> int:
        """Tasks a claim may bring to follow each one it takes."""
        return max(0, self.calls_within(BATCH_SECONDS, MAX_FOLLOWERS + 1) - 1)
