"""Work Queue's bucketing allocation modes: a category's next allocation predicted from its history.

A category in one of the bucketing modes (``WORK_QUEUE_ALLOCATION_MODE_GREEDY_BUCKETING`` = 4,
``EXHAUSTIVE_BUCKETING`` = 5, ``DET_GREEDY_BUCKETING`` = 6, ``DET_EXHAUSTIVE_BUCKETING`` = 7,
``QUANTIZED_BUCKETING`` = 8) gives each task an allocation predicted, resource by resource, from the
measured resources of the category's finished tasks; after a resource exhaustion, the retry gets a larger
value.  This follows CCTools' ``bucketing.c`` and ``bucketing_manager.c`` (and how ``category.c`` feeds
them) step for step, so that a program sees Work Queue's numbers:

* per resource, the first 10 successful tasks are the *sampling phase*: a new task gets the default
  (1 core, 1000 MB memory, 1000 MB disk, 0 gpus), an exhausted one the next power of two of the default
  above what it used;
* from then on, after every successful task the resource's history is cut into buckets (see
  ``bucketing_search``) and a new task gets one bucket's top: chosen at random by the buckets'
  probabilities in the greedy, exhaustive and quantized modes, the lowest in the deterministic ones; a
  retry gets a bucket above what the task used, or the next power of two of the default past the top.

Pure computation on the manager's side; ``predict`` is called once per dispatch of a task of such a
category and ``add_report`` once per finished attempt, so neither touches Redis.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from wq_redis.client.bucketing_search import Bucket, Point, exhaustive_buckets, greedy_buckets, quantized_buckets

GREEDY_BUCKETING = 4
EXHAUSTIVE_BUCKETING = 5
DET_GREEDY_BUCKETING = 6
DET_EXHAUSTIVE_BUCKETING = 7
QUANTIZED_BUCKETING = 8
BUCKETING_MODES = (
    GREEDY_BUCKETING,
    EXHAUSTIVE_BUCKETING,
    DET_GREEDY_BUCKETING,
    DET_EXHAUSTIVE_BUCKETING,
    QUANTIZED_BUCKETING,
)

RESOURCES = ("cores", "memory", "disk", "gpus")
DEFAULTS = {"cores": 1.0, "memory": 1000.0, "disk": 1000.0, "gpus": 0.0}
SAMPLING_POINTS = 10
INCREASE_RATE = 2.0
MAX_BUCKETS = 10
QUANTIZED_MAX_BUCKETS = 1  # CCTools gives quantized bucketing one bucket: the maximum seen
UPDATE_EPOCH = 1
NOT_MEASURED = -1.0  # rmsummary's value of a resource that was not measured


@dataclass
class BucketingState:
    """One resource's history and buckets (CCTools' ``bucketing_state_t``)."""

    mode: int
    default: float
    max_buckets: int
    sampling_points: int = SAMPLING_POINTS
    increase_rate: float = INCREASE_RATE
    update_epoch: int = UPDATE_EPOCH
    points: list[Point] = field(default_factory=list)  # sorted by value, the newer first among equals
    values: list[float] = field(default_factory=list)  # points' values, for the sorted insert
    buckets: list[Bucket] = field(default_factory=list)
    in_sampling: bool = True

    def grow(self, prev: float) -> float:
        """The default times the smallest power of the increase rate that exceeds ``prev``.

        CCTools computes the exponent as an ``int`` from a logarithm; where that logarithm is not finite
        (a default of 0, or ``prev`` of 0 or less) the conversion yields INT_MIN on the x86 machines Work
        Queue runs on, the power underflows and the value is 0: so here too.
        """
        exponent = math.log(prev / self.default) / math.log(self.increase_rate) if self.default > 0 < prev else math.nan
        if not math.isfinite(exponent):
            return 0.0
        return self.default * self.increase_rate ** (math.floor(exponent) + 1)

    def add(self, value: float) -> None:
        """Record a successful task's value; recompute the buckets at each update epoch past sampling."""
        sig = float(len(self.points) + 1)  # CCTools: next_task_sig starts at 1 and counts adds
        at = bisect.bisect_left(self.values, value)  # CCTools inserts a new point before its equals
        self.values.insert(at, value)
        self.points.insert(at, (value, sig))
        if len(self.points) >= self.sampling_points:
            self.in_sampling = False
        if not self.in_sampling and (len(self.points) - self.sampling_points) % self.update_epoch == 0:
            self.buckets = self._compute_buckets()

    def _compute_buckets(self) -> list[Bucket]:
        if self.mode in (GREEDY_BUCKETING, DET_GREEDY_BUCKETING):
            return greedy_buckets(self.points, self.mode == DET_GREEDY_BUCKETING)
        if self.mode in (EXHAUSTIVE_BUCKETING, DET_EXHAUSTIVE_BUCKETING):
            return exhaustive_buckets(self.points, self.max_buckets, self.mode == DET_EXHAUSTIVE_BUCKETING)
        return quantized_buckets(self.points, self.max_buckets)

    def predict(self, prev: float, rng: random.Random) -> float:
        """A value for a new task (``prev`` = -1) or one larger than ``prev`` (what an exhausted task used).

        In the random modes one draw of ``rng`` picks a bucket among those above ``prev``, their
        probabilities renormalised; the deterministic modes take the lowest such bucket.  Past the top
        bucket, the value grows from the default as in the sampling phase.
        """
        if self.in_sampling:
            if prev in (-1, 0):
                return self.default
            if prev < 0:
                raise ValueError(f"bucketing: invalid previous value {prev}")
            return self.grow(prev)
        deterministic = self.mode in (DET_GREEDY_BUCKETING, DET_EXHAUSTIVE_BUCKETING)
        draw = 0.0 if deterministic else rng.random()
        total = 1.0  # probability of the buckets not skipped
        cumulative = 0.0
        last = len(self.buckets) - 1
        for i, (top, prob) in enumerate(self.buckets):
            if i == last:
                return self.grow(prev) if top <= prev else top
            if deterministic:
                if top > prev:
                    return top
                continue
            if top <= prev:
                total -= prob
                continue
            cumulative += prob
            if _ieee_div(cumulative, total) > draw:
                return top
        raise AssertionError("bucketing: no buckets after the sampling phase")  # add() computes them


@dataclass
class _Report:
    """The latest values the manager holds for a task: its last prediction or its last measurement."""

    values: dict[str, float]
    exceeded: frozenset[str] | None  # None: no limits were exceeded (rmsummary's limits_exceeded NULL)


class BucketingManager:
    """Predicts allocations for the tasks of one bucketing category (CCTools' ``bucketing_manager_t``)."""

    def __init__(self, mode: int, rng: random.Random | None = None) -> None:
        if mode not in BUCKETING_MODES:
            raise ValueError(f"not a bucketing allocation mode: {mode} (expected one of {BUCKETING_MODES})")
        self.mode = mode
        self._rng = rng if rng is not None else random.Random()
        max_buckets = QUANTIZED_MAX_BUCKETS if mode == QUANTIZED_BUCKETING else MAX_BUCKETS
        self.states = {r: BucketingState(mode, DEFAULTS[r], max_buckets) for r in RESOURCES}
        self._already_run: dict[int, bool] = {}
        self._max_seen: dict[int, dict[str, float]] = {}
        self._reports: dict[int, _Report] = {}

    def add_report(
        self, task_id: int, measured: Mapping[str, float | None], success: int, exceeded: Collection[str] | None = None
    ) -> None:
        """bucketing_manager_add_resource_report: a task finished (``success`` 1) or exhausted a resource (0).

        ``measured`` has 'cores', 'memory', 'disk', 'gpus' (MB for memory and disk); a resource missing,
        None or negative was not measured and counts as -1, as in an rmsummary.  ``exceeded`` names the
        resources whose limits were exceeded (Work Queue's ``limits_exceeded``); when an exhaustion comes
        without it, the resources measured at or above the task's last prediction are taken, or all of
        them if none is, so that the retry is never smaller.  A success adds the values to the history
        and forgets the task; an exhaustion keeps what the retry's prediction needs.
        """
        if success not in (0, 1):
            raise ValueError(f"success must be 1 (succeeded) or 0 (resource exhaustion), not {success!r}")
        values = {r: _measured(measured.get(r)) for r in RESOURCES}
        if success == 1:
            self.forget(task_id)
            for r, state in self.states.items():
                state.add(values[r])
            return
        if exceeded is None:
            exceeded = self._infer_exceeded(task_id, values)
        self._already_run[task_id] = True
        seen = self._max_seen.get(task_id)
        self._max_seen[task_id] = values.copy() if seen is None else {r: max(seen[r], values[r]) for r in RESOURCES}
        self._reports[task_id] = _Report(values, frozenset(exceeded))

    def predict(self, task_id: int) -> dict[str, int]:
        """bucketing_manager_predict, as the integers a Work Queue worker is sent for the task.

        Memory, disk and gpus go out with no decimals (rounded) and the worker reads cores as an integer
        from three decimals (truncated); ``predict_values`` gives the unrounded values.
        """
        raw = self.predict_values(task_id)
        out = {r: round(v) for r, v in raw.items()}
        out["cores"] = int(float(f"{raw['cores']:.3f}"))
        return out

    def predict_values(self, task_id: int) -> dict[str, float]:
        """bucketing_manager_predict: the allocation for ``task_id`` (-1 or never seen: a new task).

        A task not yet run gets a fresh prediction each time it is asked for (Work Queue asks at every
        dispatch attempt); after an exhaustion, an exceeded resource gets a value above what it used, the
        others at least what the task used at most over its attempts; once predicted, a run task keeps
        its prediction until its next report.
        """
        self._already_run.setdefault(task_id, False)
        old = self._reports.get(task_id)
        pred: dict[str, float] = {}
        for r, state in self.states.items():
            if old is None or old.values[r] == NOT_MEASURED or not self._already_run[task_id]:
                pred[r] = state.predict(-1, self._rng)
            elif old.exceeded is None:
                pred[r] = old.values[r]
            elif r in old.exceeded:
                pred[r] = state.predict(old.values[r], self._rng)
            elif state.in_sampling:
                max_seen = self._max_seen[task_id][r]
                pred[r] = max(state.predict(max_seen, self._rng), state.predict(-1, self._rng))
            else:
                pred[r] = state.predict(self._max_seen[task_id][r], self._rng)
        self._reports[task_id] = _Report(pred, None)
        return pred

    def forget(self, task_id: int) -> None:
        """Drop what is kept for a task that will not come back (succeeded, cancelled, failed for good)."""
        self._already_run.pop(task_id, None)
        self._max_seen.pop(task_id, None)
        self._reports.pop(task_id, None)

    def _infer_exceeded(self, task_id: int, values: Mapping[str, float]) -> frozenset[str]:
        last = self._reports.get(task_id)
        if last is not None and last.exceeded is None:
            over = frozenset(r for r in RESOURCES if values[r] != NOT_MEASURED and values[r] >= last.values[r])
            if over:
                return over
        return frozenset(r for r in RESOURCES if values[r] != NOT_MEASURED)


def _measured(value: float | None) -> float:
    return NOT_MEASURED if value is None or value < 0 else float(value)


def _ieee_div(a: float, b: float) -> float:
    """a / b as C computes it: a zero divisor gives infinity (or NaN for 0/0) instead of an error."""
    if b != 0:
        return a / b
    return math.nan if a == 0 else math.copysign(math.inf, a) * math.copysign(1.0, b)
