"""Which claimed PythonTasks run as quick calls (a batch in a warm child, or a child's
fast lane), and how many tasks a claim brings to follow each one (``Pace``).  Both the
worker and a child's lane decide this, so it lives in the child package.
"""

from __future__ import annotations

from typing import Any

from ...protocol import packing
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


class Pace:
    """The recent seconds per task of a slot (a moving average), which sets how many tasks
    a claim may bring to follow each one: enough for about BATCH_SECONDS of work, none
    until a task was seen to finish (long tasks are never held back from idle workers)."""

    def __init__(self, seconds_per_task: float | None = None) -> None:
        self.seconds_per_task = seconds_per_task

    def record(self, tasks: int, seconds: float) -> None:
        """Fold a finished run of ``tasks`` tasks in ``seconds`` into the pace."""
        pace = seconds / tasks
        self.seconds_per_task = pace if self.seconds_per_task is None else 0.5 * (self.seconds_per_task + pace)

    def followers(self) -> int:
        pace = self.seconds_per_task
        if pace is None:
            return 0
        return max(0, min(MAX_FOLLOWERS, int(BATCH_SECONDS / max(pace, 1e-6)) - 1))
