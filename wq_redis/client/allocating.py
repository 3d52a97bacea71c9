"""Allocating: what a task asks of a worker, as Work Queue decides it.

Work Queue's manager sizes each task when it dispatches it (``task_worker_box_size``):
from what the task declared, its category's maximum and minimum, the queue's
proportional-resources tunables and, in an automatic category mode, what finished tasks
of the category measured.  Here the worker claims instead of being sent tasks, so the
work is split where the knowledge is:

- the manager names each task's *resource class* (protocol/resources.py): the task's
  values over its category's maximum, the category's minimum, the tunables, and for an
  automatic category the category itself;
- the worker's claim (claim.lua) turns the class into the task's box on that worker,
  writes it into the task (``resources_allocated``), and allocates exactly that;
- for an automatic category, the manager keeps the category's model (allocation.py:
  category.c's modes, first allocations, bucketing), feeds it what each finished task
  measured (``_learn``), and publishes the category's label (keys.label) whenever it
  changes: a claim reads the label that is current when it runs, as Work Queue sizes a
  task with the category as it is at dispatch.  A task that runs out of its first
  allocation is retried at the category's maximum by its worker (escalate.lua).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..protocol.codes import Result
from ..protocol.fields import MEMBER_B
from ..protocol.resources import (
    NO_RESOURCES,
    RESOURCE_NAMES,
    UNSET,
    Quad,
    ResourceClass,
    category_hex,
    parse_resource_class,
    queue_member,
    split_member,
)
from .allocation import BUCKETING_MODES, FIRST, FIXED, MAX, STEADY_N_TASKS, Categories, Category
from .queue_state import QueueState
from .task import Task

PLACEMENTS_KEPT = 4096  # memoized (category, resources, tag) placements; more are a sign of per-task values
PROPORTIONAL = ("force-proportional-resources", "proportional-resources")
WHOLE_TASKS = ("force-proportional-resources-whole-tasks", "proportional-whole-tasks")
NEW_TASK = 0  # a task id no task has (Work Queue's ids start at 1): a bucketing prediction for a new task
# the results whose measurements a category learns from, and how (category.c's success)
_LEARNED: dict[int | None, int] = {
    Result.SUCCESS: 1,
    Result.RESOURCE_EXHAUSTION: 0,
    Result.SIGNAL: -1,
    Result.TASK_MAX_RUN_TIME: -1,
    Result.DISK_ALLOC_FULL: -1,
    Result.OUTPUT_TRANSFER_ERROR: -1,
}
_warned_tunes: set[str] = set()


def _sized_category(member: bytes) -> str:
    """The hex name of the automatic category whose label sized a task of queue ``member``
    ("" for another queue, or a member that is not ours)."""
    try:
        return parse_resource_class(split_member(member.decode())[0]).category
    except (ValueError, UnicodeDecodeError):
        return ""


def whole(value: float | int | None) -> int:
    """A resource amount as the class carries it: a whole number, -1 for unset (a fraction
    is rounded up: 0.5 cores still needs a core)."""
    if value is None or value < 0:
        return UNSET
    return math.ceil(value)


def quad(resources: Mapping[str, float | int | None] | None) -> Quad:
    r = resources or {}
    c, m, d, g = (whole(r.get(name)) for name in RESOURCE_NAMES)
    return (c, m, d, g)


def checked(resources: Mapping[str, Any]) -> dict[str, float]:
    """Work Queue's resource dictionary (``cores``, ``memory``, ``disk``, ``gpus``; others
    are refused, as they cannot be given here), its values as numbers."""
    unknown = set(resources) - set(RESOURCE_NAMES)
    if unknown:
        raise ValueError(f"unknown resources {sorted(unknown)}; use {RESOURCE_NAMES}")
    out = {}
    for name, value in resources.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        out[name] = float(value)
    return out


class Allocating(QueueState):
    """Categories, the allocation tunables, and each task's resource class."""

    _proportional: bool
    _whole_tasks: bool
    _labels_sent: dict[str, str]  # category hex -> the label last published
    _members_of: dict[str, set[str]]  # category hex -> the ready queues of its tasks (woken on a publish)

    def _init_allocation(self) -> None:
        self._allocation = Categories()
        self._proportional = True  # Work Queue's defaults
        self._whole_tasks = True
        self._labels_sent = {}
        self._learned = {}
        self._members_of = {}
        self._auto = {}

    # -- Work Queue's calls ---------------------------------------------------------------
    def specify_category_max_resources(self, category: str, resources: Mapping[str, Any]) -> None:
        """The most a task of ``category`` is given: what it leaves unset comes from here."""
        self._changed(category, lambda c: c.set_max(checked(resources)))

    def specify_category_min_resources(self, category: str, resources: Mapping[str, Any]) -> None:
        """The least a task of ``category`` is given, whatever it declared."""
        self._changed(category, lambda c: c.set_min(checked(resources)))

    def specify_max_resources(self, resources: Mapping[str, Any]) -> None:
        """``specify_category_max_resources`` of the category "default" (tasks with none)."""
        self.specify_category_max_resources("default", resources)

    def specify_min_resources(self, resources: Mapping[str, Any]) -> None:
        """``specify_category_min_resources`` of the category "default"."""
        self.specify_category_min_resources("default", resources)

    def specify_category_first_allocation_guess(self, category: str, resources: Mapping[str, Any]) -> None:
        """The first allocation of an automatic category before any task of it finished."""
        self._changed(category, lambda c: c.set_first_allocation_guess(checked(resources)))

    def specify_category_autolabel_resource(self, category: str, resource: str, autolabel: bool) -> int:
        """Turn the automatic sizing of one resource of ``category`` on or off; 1 if
        ``resource`` is one of cores, memory, disk, gpus, else 0 (as Work Queue)."""
        found: list[bool] = []
        self._changed(category, lambda c: found.append(c.enable_auto_resource(resource, bool(autolabel))))
        return int(found[0])

    def specify_category_mode(self, category: str | None, mode: int) -> int:
        """A category's allocation mode (``WORK_QUEUE_ALLOCATION_MODE_*``); ``None`` sets the
        mode of the categories not yet used.  Returns 1, or 0 for an unknown mode (Work Queue's
        answers)."""
        if not self._allocation.specify_mode(category, int(mode)):
            return 0
        self._placements.clear()
        if category is not None:
            self._publish_label(self._allocation.get(category))
        return 1

    def tune(self, name: str, value: float) -> int:
        """Work Queue's tunables: ``force-proportional-resources`` (also
        ``proportional-resources``), ``proportional-whole-tasks`` (also
        ``force-proportional-resources-whole-tasks``) and ``category-steady-n-tasks`` act
        as in Work Queue; the others tune Work Queue's manager loop, which has no twin
        here, and are accepted with a warning.  Returns 0, as Work Queue does."""
        if name in PROPORTIONAL:
            self._proportional = max(0, int(value)) > 0
        elif name in WHOLE_TASKS:
            self._whole_tasks = max(0, int(value)) > 0
        elif name == STEADY_N_TASKS:
            self._allocation.tune_bucket_size(name, int(value))
        elif name not in _warned_tunes:
            _warned_tunes.add(name)
            warnings.warn(f"tune({name!r}) has no effect in wq-redis: it tunes Work Queue's manager loop", stacklevel=2)
        self._placements.clear()
        return 0

    # -- the class of a task -----------------------------------------------------------------
    def _placement(self, task: Task) -> str:
        """The task's ready queue ``CLASS|TAG`` (memoized: most tasks of a queue share a
        handful of (category, resources, tag) combinations)."""
        spec = task._spec
        key = (spec.category, spec.cores, spec.memory, spec.disk, spec.gpus, spec.tag)
        member = self._placements.get(key)
        if member is None:
            if len(self._placements) >= PLACEMENTS_KEPT:
                self._placements.clear()
            resource_class = self._class_of(task)
            member = self._placements[key] = queue_member(resource_class, spec.tag)
            if resource_class.category:  # its queue and its queue at the maximum are woken by a publish
                members = self._members_of.setdefault(resource_class.category, set())
                members.add(member)
                members.add(queue_member(replace(resource_class, at_max=True), spec.tag))
        return member

    def _class_of(self, task: Task) -> ResourceClass:
        spec = task._spec
        category = self._allocation.get(spec.category or "default")
        user: dict[str, int | float] = {
            name: UNSET if value is None else value
            for name, value in zip(RESOURCE_NAMES, (spec.cores, spec.memory, spec.disk, spec.gpus))
        }
        if category.mode == FIXED:
            declared = quad(category.max_resources(user, FIRST))
            return ResourceClass(declared, quad(category.min_allocation), self._proportional, self._whole_tasks)
        # automatic: the label (the category's part) is read by the claim; the class keeps
        # the task's own values, which win over the label
        self._publish_label(category)
        return ResourceClass(
            quad(user), NO_RESOURCES, self._proportional, self._whole_tasks, category_hex(category.name)
        )

    # -- what finished tasks teach their category --------------------------------------------
    def _learn(self, task: Task) -> None:
        """Feed a finished task's measurements to its category's model when the category
        sizes tasks automatically, and count the result as learned (``_publish_learned``
        tells the claims, which wait for it: keys.label).  Nothing for a manager that uses
        no automatic category."""
        if not self._labels_sent:
            return
        member = task._fields.get(MEMBER_B)
        sized = _sized_category(member) if member else ""
        if sized:  # counted as complete.lua counted it: by the queue the task ran from
            self._learned[sized] = self._learned.get(sized, 0) + 1
        category = self._allocation.get(task._spec.category or "default")
        success = _LEARNED.get(task.result)
        if category.mode == FIXED or success is None:
            return
        measured = task.resources_measured
        values = {"cores": measured.cores, "memory": measured.memory, "disk": measured.disk, "gpus": measured.gpus}
        wall = measured.wall_time if measured.wall_time is not None else 0.0
        category.accumulate(values, wall, task.result == Result.SUCCESS, success, None, task.id or NEW_TASK)
        hex_name = category_hex(category.name)
        if hex_name in self._auto:  # its label may have changed: published after the batch
            self._learned.setdefault(hex_name, 0)

    def _publish_learned(self, everything: bool = False) -> None:
        """After a batch of results: publish the labels of the categories they taught
        (``everything``: of every automatic category, whatever changed: a retrieve that
        found nothing may be waiting for tasks that a hostile count holds back)."""
        for hex_name in list(self._auto if everything else self._learned):
            self._publish_label(self._auto[hex_name], force=everything)

    def _publish_label(self, category: Category, force: bool = False) -> None:
        """Publish the category's label for claim.lua (label.lua) when it or the count of
        results learned changed: the first attempt's maximum, the maximum for a retry, the
        largest measured, and the category's minimum."""
        hex_name = category_hex(category.name)
        if category.mode == FIXED and hex_name not in self._labels_sent:
            return  # (a category that was automatic keeps its label: tasks sized by it may wait)
        first = category.max_resources(None, FIRST, NEW_TASK)
        if category.mode in BUCKETING_MODES:  # a retry gets the category's maximum
            at_max = dict(category.max_allocation)
        else:
            at_max = category.max_resources(None, MAX)
        parts = (*quad(first), *quad(at_max), *quad(category.max_resources_seen), *quad(category.min_allocation))
        label = " ".join(str(v) for v in parts)
        learned = self._learned.pop(hex_name, 0)
        if not learned and not force and self._labels_sent.get(hex_name) == label:
            return
        starting = hex_name not in self._labels_sent
        members = sorted(self._members_of.get(hex_name, ()))
        counts = self._books.categories.of(category.name)
        outstanding = max(0, counts["submitted"] - counts["done"] - counts["cancelled"])
        try:
            self._redis.call(
                lambda: self._store.publish_label(hex_name, label, learned, starting, outstanding, members)
            )
        except BaseException:
            if learned:  # told next time: the claims wait for it
                self._learned[hex_name] = self._learned.get(hex_name, 0) + learned
            raise
        self._labels_sent[hex_name] = label
        self._auto[hex_name] = category

    def _republish_labels(self) -> None:
        """Publish every automatic category's label again (Redis lost them); the results
        learned before are of the lost state."""
        self._labels_sent.clear()
        self._learned.clear()
        for category in self._allocation:
            self._publish_label(category)

    def _changed(self, name: str, change: Any) -> None:
        """Apply ``change`` to category ``name``; tasks submitted from now on see it."""
        category = self._allocation.get(name)
        change(category)
        self._placements.clear()
        self._publish_label(category)
        self._store_category(name)
