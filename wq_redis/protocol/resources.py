"""Resource requests and resource classes.

A task's request (cores, memory MB, disk MB, gpus) is canonicalised into a *resource
class*, the name of the ready queue it waits in.  Memory and disk are rounded *up* into
buckets (1, 1.5, 2, 3, 4, 6, 8, ... x 256 MB: at most a third wasted) so that the number
of classes, and therefore of queues a worker must look at, stays small.  The worker
allocates the class's values, so its books always match what the claim script checked.

Lua parses the class name with the pattern ``c(%d+)%.m(%d+)%.d(%d+)%.g(%d+)``; keep
``class_name`` and ``scripts/claim.lua`` in step.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

RESOURCE_NAMES = ("cores", "memory", "disk", "gpus")  # a task's resources, in the order of a class name
DEFAULT_CORES = 1
BUCKET_BASE_MB = 256
_CLASS_RE = re.compile(r"^c(\d+)\.m(\d+)\.d(\d+)\.g(\d+)$")


@dataclass(frozen=True)
class Request:
    """Resolved resources of one task: what it needs to run."""

    cores: int = DEFAULT_CORES
    memory: int = 0  # MB
    disk: int = 0  # MB
    gpus: int = 0

    def __post_init__(self) -> None:
        for field in RESOURCE_NAMES:  # (not asdict: this runs per task)
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{field} must be a non-negative integer, got {value!r}")
        if self.cores < 1 and self.gpus < 1:
            raise ValueError("a task needs at least one core or one GPU (cores=0 suits GPU-only tasks)")

    def fits(self, free: Request | dict[str, int]) -> bool:
        f = free if isinstance(free, dict) else free.as_dict()
        return all(getattr(self, k) <= f[k] for k in RESOURCE_NAMES)

    def as_dict(self) -> dict[str, int]:
        """The four amounts by name (``dataclasses.asdict`` is ten times slower)."""
        return {"cores": self.cores, "memory": self.memory, "disk": self.disk, "gpus": self.gpus}


def bucket(megabytes: int) -> int:
    """Round a memory or disk request up to its bucket (0 stays 0)."""
    if megabytes <= 0:
        return 0
    size = BUCKET_BASE_MB
    while True:
        if megabytes <= size:
            return size
        if megabytes <= size * 3 // 2:
            return size * 3 // 2
        size *= 2


def class_of(request: Request) -> Request:
    """The resource class a request falls in (memory and disk rounded up)."""
    return Request(request.cores, bucket(request.memory), bucket(request.disk), request.gpus)


def class_name(request: Request) -> str:
    """Name of the class of ``request``, e.g. ``c4.m0.d0.g1``."""
    c = class_of(request)
    return f"c{c.cores}.m{c.memory}.d{c.disk}.g{c.gpus}"


@functools.lru_cache(maxsize=256)  # a worker parses its few classes once per claimed group
def parse_class(name: str) -> Request:
    """Inverse of ``class_name`` (a Request is frozen: the cached one is shared)."""
    match = _CLASS_RE.match(name)
    if not match:
        raise ValueError(f"not a resource class: {name!r}")
    cores, memory, disk, gpus = (int(g) for g in match.groups())
    return Request(cores, memory, disk, gpus)


def queue_member(request: Request, tag: str | None) -> str:
    """The registry member ``CLASS|TAG`` naming one ready queue."""
    return f"{class_name(request)}|{tag or ''}"


def split_member(member: str) -> tuple[str, str]:
    """``CLASS|TAG`` -> (class name, tag); the tag may itself contain '|'."""
    cls, _, tag = member.partition("|")
    return cls, tag
