"""Work Queue's per-category allocation model (CCTools' ``dttools/src/category.c``).

Work Queue decides what a task may use from its category: explicit category maximum and
minimum resources, and, in the automatic modes, a *first allocation* computed from the
resources measured on finished tasks of the category.  A task is tried first with that
allocation (label ``FIRST``); on resource exhaustion ``next_label`` moves it to ``MAX`` (the
category maximum, or a whole worker) and from there to ``ERROR``.  Programs tuned against
Work Queue expect these exact numbers, so this module reproduces category.c's rules rather
than inventing its own: histograms rounded up to bucket sizes as ``histogram.c`` does, the
rmsummary merges (*override* copies what the source sets, *max* keeps the larger), the
steady-state switch after ``category-steady-n-tasks`` completions, and the mode formulas.

Resources are dicts over ``cores``, ``memory``, ``disk``, ``gpus`` where -1 means unset (as in
rmsummary).  Values are floats where C keeps doubles (a measured 1.5 cores stays 1.5); the
first allocations themselves are whole numbers, as C computes them in int64.  This is pure
computation: the manager feeds it measurements and asks for allocations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from .bucketing import BucketingManager
from .first_allocation import (
    Histogram,
    first_allocation_max_seen,
    first_allocation_max_throughput,
    first_allocation_min_waste,
)

FIRST, MAX, ERROR = "first", "max", "error"  # category_allocation_t
FIXED, MAX_MODE, MIN_WASTE, MAX_THROUGHPUT = 0, 1, 2, 3  # category_mode_t; MAX_MODE is C's MODE_MAX
BUCKETING_MODES = frozenset({4, 5, 6, 7, 8})  # greedy, exhaustive, det. greedy, det. exhaustive, quantized
MODES = frozenset({FIXED, MAX_MODE, MIN_WASTE, MAX_THROUGHPUT}) | BUCKETING_MODES
RESOURCES = ("cores", "gpus", "memory", "disk")  # category.c's labeled_resources, in its order
DEFAULT_BUCKET_SIZES = {"cores": 1, "gpus": 1, "memory": 250, "disk": 250}
DEFAULT_STEADY_N_TASKS = 25
STEADY_N_TASKS = "category-steady-n-tasks"

Resources = dict[str, float]


class BucketingLike(Protocol):
    """What category.c asks of a bucketing manager (``bucketing_manager_*``)."""

    def add_report(self, task_id: int, measured: Mapping[str, float], success: int) -> None: ...
    def predict(self, task_id: int) -> Mapping[str, float]: ...


def _default_bucketing(mode: int) -> BucketingLike:
    """``bucketing_manager_initialize`` (client/bucketing.py)."""
    return BucketingManager(mode)


def unset() -> Resources:
    """``rmsummary_create(-1)``: every resource unset."""
    return dict.fromkeys(RESOURCES, -1.0)


def _value(summary: Mapping[str, float | int | None] | None, name: str) -> float:
    """A resource of a (possibly partial) mapping, -1 where absent, as rmsummary reads it."""
    found = summary.get(name) if summary is not None else None
    return -1.0 if found is None else float(found)


def merge_override(dest: Resources, src: Mapping[str, float | int | None] | None) -> None:
    """``rmsummary_merge_override``: copy every field that ``src`` sets (> -1)."""
    if src is not None:
        for name in RESOURCES:
            if _value(src, name) > -1:
                dest[name] = _value(src, name)


def merge_max(dest: Resources, src: Mapping[str, float | int | None] | None) -> None:
    """``rmsummary_merge_max``: keep the larger of each field (-1 loses to anything set)."""
    if src is not None:
        for name in RESOURCES:
            dest[name] = max(dest[name], _value(src, name))


class Category:
    """One category: its limits, its mode, what its tasks measured, and its first allocation."""

    def __init__(self, name: str, owner: Categories, bucketing_factory: Callable[[int], BucketingLike]) -> None:
        self.name = name
        self.owner = owner  # reads the manager's steady-n-tasks, a file static in C
        self.mode = FIXED
        self.max_allocation = unset()
        self.min_allocation = unset()
        self.first_allocation: Resources | None = None
        self.max_resources_seen = unset()
        self.autolabel = dict.fromkeys(RESOURCES, False)
        self.histograms = {name: Histogram(owner.bucket_sizes[name]) for name in RESOURCES}
        self.steady = False
        self.completions_since_last_reset = 0
        self.total_tasks = 0
        self.bucketing: BucketingLike | None = None
        self._bucketing_factory = bucketing_factory

    def set_mode(self, mode: int) -> None:
        """``category_specify_allocation_mode``: automatic modes label cores, memory and disk
        (never gpus); a bucketing manager is made once, at the first bucketing mode."""
        if mode not in MODES:
            raise ValueError(f"unknown category mode {mode}")
        self.mode = mode
        if mode in BUCKETING_MODES and self.bucketing is None:
            self.bucketing = self._bucketing_factory(mode)
        auto = mode != FIXED
        self.autolabel.update(cores=auto, memory=auto, disk=auto, gpus=False)

    def enable_auto_resource(self, resource: str, autolabel: bool) -> bool:
        """``category_enable_auto_resource``: turn automatic labeling of one resource on or off."""
        if resource not in RESOURCES:
            return False
        self.autolabel[resource] = bool(autolabel)
        return True

    def set_max(self, resources: Mapping[str, float | int | None]) -> None:
        """``category_specify_max_allocation``: replaces the maximum (missing keys = unset)."""
        self.max_allocation = unset()
        merge_max(self.max_allocation, resources)

    def set_min(self, resources: Mapping[str, float | int | None]) -> None:
        """``category_specify_min_allocation``; the minimum also counts as a measurement so the
        automatic allocation never falls below it."""
        self.min_allocation = unset()
        merge_max(self.min_allocation, resources)
        merge_max(self.max_resources_seen, resources)

    def set_first_allocation_guess(self, resources: Mapping[str, float | int | None]) -> None:
        """``category_specify_first_allocation_guess``: the user knows, so the category is steady."""
        self.steady = True
        merge_max(self.max_resources_seen, resources)
        self.first_allocation = unset()
        merge_max(self.first_allocation, resources)

    def accumulate(
        self,
        measured: Mapping[str, float | None] | None,
        wall_time_s: float,
        result_ok: bool,
        success: int,
        max_worker: Mapping[str, int | float] | None,
        task_id: int,
    ) -> bool:
        """``category_bucketing_accumulate_summary``: learn from a finished task.  ``success`` is
        1 (done), 0 (resource exhaustion), -1 (other); only tasks that exited normally
        (``result_ok``) enter the histograms.  Returns True when the first allocation changed."""
        if measured is None:
            return False
        if self.bucketing is not None and self.mode in BUCKETING_MODES and success in (0, 1):
            self.bucketing.add_report(task_id, {r: _value(measured, r) for r in RESOURCES}, success)
        update = False
        if not self.steady and self._new_maximum(measured):  # an obsolete first allocation
            self.first_allocation = None
            self.completions_since_last_reset = 0
            update = True
        n_tasks = self.owner.steady_n_tasks
        self.steady = self.completions_since_last_reset >= n_tasks
        for name in RESOURCES:
            self.max_resources_seen[name] = max(_value(measured, name), self.max_resources_seen[name])
        if result_ok:
            for name in RESOURCES:
                self.histograms[name].add(_value(measured, name), wall_time_s)
            self.completions_since_last_reset += 1
            if n_tasks > 0 and self.completions_since_last_reset % n_tasks == 0:
                update |= self.update_first_allocation(max_worker)
            self.total_tasks += 1
        return update

    def _new_maximum(self, measured: Mapping[str, float | None]) -> bool:
        """A measurement above every bucket seen, for a resource without an explicit maximum."""
        for name in RESOURCES:
            if self.max_allocation[name] > 0:
                continue
            h = self.histograms[name]
            if _value(measured, name) > h.round_up(h.max_value):
                return True
        return False

    def update_first_allocation(self, max_worker: Mapping[str, int | float] | None) -> bool:
        """``category_update_first_allocation``: recompute the labeled resources from the
        histograms, bounded by the largest of worker, seen and explicit maximum."""
        if self.mode == FIXED or self.total_tasks < 1:
            return False
        top = unset()
        merge_override(top, max_worker)
        merge_override(top, self.max_resources_seen)
        merge_override(top, self.max_allocation)
        if self.first_allocation is None:
            self.first_allocation = unset()
        for name in RESOURCES:
            if not self.autolabel[name]:
                continue
            h, top_value = self.histograms[name], int(top[name])
            if self.mode == MIN_WASTE:
                value = first_allocation_min_waste(h, top_value)
            elif self.mode == MAX_THROUGHPUT:
                value = first_allocation_max_throughput(h, top_value)
            elif self.mode == MAX_MODE:
                worker = int(_value(max_worker, name))
                value = first_allocation_max_seen(h, top_value, worker, int(self.max_allocation[name]))
            else:
                value = top_value
            self.first_allocation[name] = float(value)
        merge_max(self.first_allocation, self.min_allocation)
        return True

    def next_label(
        self,
        current: str,
        overflow: bool,
        user: Mapping[str, int | float] | None,
        measured: Mapping[str, float | None] | None,
    ) -> str:
        """``category_next_label``: after an exhaustion, retry at the maximum unless the task
        already went over its own or the category's explicit maximum (or the mode is FIXED)."""
        if not overflow:
            return current
        if self.mode == FIXED:
            return ERROR
        for name in RESOURCES if measured is not None else ():
            used, limit = int(_value(measured, name)), int(_value(user, name))
            if limit <= -1:
                limit = int(self.max_allocation[name])
            if limit > -1 and used > limit:
                return ERROR
        return MAX

    def max_resources(self, user: Mapping[str, int | float] | None, request: str, task_id: int = -1) -> Resources:
        """``category_task_max_resources``: what a task may use at label ``request``: in steady
        MIN_WASTE/MAX_THROUGHPUT the largest seen, a bucketing prediction, the explicit
        maximum, the first allocation when trying FIRST, and the task's own values on top."""
        internal = unset()
        automatic = (MIN_WASTE, MAX_THROUGHPUT)
        if self.mode not in (FIXED, MAX_MODE):
            if self.steady and self.mode in automatic:
                merge_override(internal, self.max_resources_seen)
                merge_max(internal, self.first_allocation)
            elif task_id >= 0 and self.mode in BUCKETING_MODES and self.bucketing is not None:
                merge_override(internal, self.bucketing.predict(task_id))
        merge_override(internal, self.max_allocation)
        if self.steady and request == FIRST and self.mode in (*automatic, MAX_MODE):
            merge_override(internal, self.first_allocation)
        merge_override(internal, user)
        return internal

    def min_resources(self, user: Mapping[str, int | float] | None, request: str, task_id: int = -1) -> Resources:
        """``category_task_min_resources``: the allocation (else the largest seen, in automatic
        modes), never below the category minimum.  TaskVine's sandbox term is not Work Queue's."""
        allocation = self.max_resources(user, request, task_id)
        internal = unset() if self.mode == FIXED else dict(self.max_resources_seen)
        merge_override(internal, allocation)
        merge_max(internal, self.min_allocation)
        return internal

    def task_min_resources(
        self,
        user: Mapping[str, int | float] | None,
        request: str,
        task_id: int,
        max_worker: Mapping[str, int | float] | None,
    ) -> Resources:
        """work_queue.c's ``task_min_resources``: a first try that would fit no connected worker
        asks again as if the task had declared the largest worker, so an outlier seen once does
        not strand later tasks."""
        found = self.min_resources(user, request, task_id)
        if request != FIRST or max_worker is None:
            return found
        if any(0 < _value(max_worker, r) < found[r] for r in ("cores", "memory", "disk", "gpus")):
            declared = unset()
            merge_override(declared, max_worker)
            merge_override(declared, user)
            found = self.min_resources(declared, request, task_id)
        return found


class Categories:
    """One manager's categories and the tunables category.c keeps as file statics."""

    def __init__(
        self,
        default_mode: int = FIXED,
        bucketing_factory: Callable[[int], BucketingLike] = _default_bucketing,
    ) -> None:
        self.steady_n_tasks = DEFAULT_STEADY_N_TASKS
        self.bucket_sizes = dict(DEFAULT_BUCKET_SIZES)  # read when a category is created, as in C
        self.default_mode = default_mode
        self._bucketing_factory = bucketing_factory
        self._categories: dict[str, Category] = {}

    def get(self, name: str | None) -> Category:
        """``work_queue_category_lookup_or_create``: a new category takes the default mode."""
        name = name or "default"
        found = self._categories.get(name)
        if found is None:
            found = self._categories[name] = Category(name, self, self._bucketing_factory)
            found.set_mode(self.default_mode)
        return found

    def __iter__(self) -> Iterator[Category]:
        """The categories so far, in creation order (a snapshot, so ``get`` may run meanwhile)."""
        return iter(list(self._categories.values()))

    def specify_mode(self, name: str | None, mode: int) -> bool:
        """``work_queue_specify_category_mode``: False for an unknown mode; no category name sets
        the mode of categories created from now on (existing ones keep theirs, as in C)."""
        if mode not in MODES:
            return False
        if name is None:
            self.default_mode = mode
        else:
            self.get(name).set_mode(mode)
        return True

    def tune_bucket_size(self, resource: str, size: int) -> None:
        """``category_tune_bucket_size``: ``category-steady-n-tasks`` (work_queue's tune) or a
        resource's histogram bucket size for categories created afterwards."""
        if resource == STEADY_N_TASKS:
            self.steady_n_tasks = int(size)
        elif resource in RESOURCES:
            if size <= 0:
                raise ValueError(f"bucket size should be larger than zero: {size}")
            self.bucket_sizes[resource] = int(size)
        else:
            raise ValueError(f"there is no resource named {resource!r}")
