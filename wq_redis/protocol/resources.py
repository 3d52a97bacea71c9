"""Resource requests, resource classes, and the allocation they stand for.

A task waits in the ready queue of its *resource class*: what it declared (cores, memory
MB, disk MB, gpus; -1 for a resource it left unset), its category's minimum, whether the
queue gives proportional resources, and for a category in an automatic allocation mode
the category itself.  What a task is *given* is decided on the worker when it is
claimed, as Work Queue's manager decides it when it dispatches (``task_worker_box_size``
in work_queue.c): ``scripts/claim.lua`` computes the box from the class and the worker's
size, writes it into the task's hash (field ``alloc``), and the worker allocates exactly
that.  A task that declares nothing gets the whole worker; with proportional resources
(Work Queue's default) the resources it left unset get the same share of the worker as
the largest one it declared, rounded so that a whole number of tasks fit.

Class names (Lua parses them in claim.lua; keep both in step)::

    c{cores}[.m{memory}][.d{disk}][.g{gpus}][.n{c}.{m}.{d}.{g}][.p{P}{W}][.k{hex} | .K{hex}]

memory, disk and gpus are left out when unset (-1): a task that declares nothing waits in
``c-1``.  Every queued task's hash holds its class (field ``q``): the short name keeps a
queued no-op task under 200 bytes of Redis 7.0 (the full ``c-1.m-1.d-1.g-1`` put its hash
in the next allocator size class, 16 bytes more); the full form still parses.
``.n`` the category minimum (absent: none), ``.p`` the proportional flags when not both
on, ``.k`` an automatic category (hex of its name) whose current label the claim reads
(``keys.label``), ``.K`` the same category at its maximum: where a task that ran out of
its first allocation is retried.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

RESOURCE_NAMES = ("cores", "memory", "disk", "gpus")  # a task's resources, in the order of a class name
UNSET = -1  # a resource the task did not declare (rmsummary's -1)
Quad = tuple[int, int, int, int]  # cores, memory MB, disk MB, gpus
NO_RESOURCES: Quad = (UNSET, UNSET, UNSET, UNSET)
_NUM = r"(-1|\d+)"
_CLASS_RE = re.compile(
    rf"^c{_NUM}(?:\.m{_NUM})?(?:\.d{_NUM})?(?:\.g{_NUM})?"
    rf"(?:\.n{_NUM}\.{_NUM}\.{_NUM}\.{_NUM})?(?:\.p([01])([01]))?(?:\.([kK])([0-9a-f]+))?$"
)


@dataclass(frozen=True)
class Request:
    """Amounts of the four resources (an allocation, or what a class needs at least)."""

    cores: int = 0
    memory: int = 0  # MB
    disk: int = 0  # MB
    gpus: int = 0

    def __post_init__(self) -> None:
        for field in RESOURCE_NAMES:  # (not asdict: this runs per task)
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{field} must be a non-negative integer, got {value!r}")

    def fits(self, free: Request | dict[str, int]) -> bool:
        f = free if isinstance(free, dict) else free.as_dict()
        return all(getattr(self, k) <= f[k] for k in RESOURCE_NAMES)

    def as_dict(self) -> dict[str, int]:
        """The four amounts by name (``dataclasses.asdict`` is ten times slower)."""
        return {"cores": self.cores, "memory": self.memory, "disk": self.disk, "gpus": self.gpus}


@dataclass(frozen=True)
class ResourceClass:
    """What the tasks of one ready queue declared, from which each worker computes the box
    it gives them (claim.lua)."""

    declared: Quad = NO_RESOURCES  # the task's own values over its category's maximum
    minimum: Quad = NO_RESOURCES  # the category's minimum (specify_category_min_resources)
    proportional: bool = True  # tune("force-proportional-resources")
    whole_tasks: bool = True  # tune("proportional-whole-tasks")
    category: str = ""  # hex of an automatic category's name ("" for none)
    at_max: bool = False  # retried at the category's maximum after running out

    def __post_init__(self) -> None:
        for quad in (self.declared, self.minimum):
            if len(quad) != 4 or any(not isinstance(v, int) or isinstance(v, bool) or v < UNSET for v in quad):
                raise ValueError(f"resources must be whole numbers >= -1 (unset), got {quad!r}")

    @property
    def name(self) -> str:
        c, m, d, g = self.declared
        text = f"c{c}"
        if m != UNSET:
            text += f".m{m}"
        if d != UNSET:
            text += f".d{d}"
        if g != UNSET:
            text += f".g{g}"
        if self.minimum != NO_RESOURCES:
            text += ".n{}.{}.{}.{}".format(*self.minimum)
        if not (self.proportional and self.whole_tasks):
            text += f".p{int(self.proportional)}{int(self.whole_tasks)}"
        if self.category:
            text += f".{'K' if self.at_max else 'k'}{self.category}"
        return text

    def nominal(self) -> Request:
        """The least a task of this class is given on any worker: what counts and displays
        use where no worker is in view (an undeclared resource counts as none, cores as
        one unless the task asks for GPUs)."""
        c, m, d, g = (max(a, b) for a, b in zip(self.declared, self.minimum))
        return Request(c if c >= 0 else (0 if g > 0 else 1), max(m, 0), max(d, 0), max(g, 0))


def category_hex(category: str) -> str:
    """A category's name as a class suffix and key part (any text, and never a '|')."""
    return category.encode().hex()


def class_name(request: Request | ResourceClass) -> str:
    """Name of a class; a plain Request names the class of a task declaring exactly it."""
    if isinstance(request, Request):
        request = ResourceClass((request.cores, request.memory, request.disk, request.gpus))
    return request.name


@functools.lru_cache(maxsize=1024)  # classes are few: a worker or a status parses each once
def parse_resource_class(name: str) -> ResourceClass:
    """Inverse of ``ResourceClass.name`` (frozen: the cached one is shared)."""
    match = _CLASS_RE.match(name)
    if not match:
        raise ValueError(f"not a resource class: {name!r}")
    g = match.groups()
    m, d, gpus = (UNSET if v is None else int(v) for v in g[1:4])  # left out: unset
    declared = (int(g[0]), m, d, gpus)
    minimum = NO_RESOURCES if g[4] is None else (int(g[4]), int(g[5]), int(g[6]), int(g[7]))
    proportional, whole = (True, True) if g[8] is None else (g[8] == "1", g[9] == "1")
    return ResourceClass(declared, minimum, proportional, whole, g[11] or "", g[10] == "K")


def parse_class(name: str) -> Request:
    """What a task of class ``name`` needs at least (``ResourceClass.nominal``)."""
    return parse_resource_class(name).nominal()


def queue_member(request: Request | ResourceClass, tag: str | None) -> str:
    """The registry member ``CLASS|TAG`` naming one ready queue."""
    return f"{class_name(request)}|{tag or ''}"


def split_member(member: str) -> tuple[str, str]:
    """``CLASS|TAG`` -> (class name, tag); the tag may itself contain '|'."""
    cls, _, tag = member.partition("|")
    return cls, tag


def given(member: str, alloc: str | bytes | None) -> Request:
    """What a claimed task was given: the box claim.lua wrote (``alloc``), else (a hash
    without one) the least its class needs."""
    box = allocation_of(alloc)
    return box if box is not None else parse_class(split_member(member)[0])


def allocation_of(text: str | bytes | None) -> Request | None:
    """The box claim.lua wrote into a task's ``alloc`` field ("cores memory disk gpus"),
    or None when it is absent or not four whole numbers."""
    if not text:
        return None
    try:
        parts = [int(p) for p in (text.decode() if isinstance(text, bytes) else text).split()]
        return Request(*parts) if len(parts) == 4 else None
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
