"""What a worker has (detected or declared) and what its running tasks hold.

Resources given on the command line are taken as declared, as Work Queue does, with a
warning where detection disagrees.  GPUs are named by NVML UUID when NVML sees them (so
``CUDA_VISIBLE_DEVICES`` cannot point a task at the wrong board), else by index.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass, field

from ..protocol.resources import Request
from ..protocol.sizes import MB

log = logging.getLogger("wq_redis.worker")


@dataclass(frozen=True)
class GPU:
    index: int
    uuid: str
    model: str = ""

    @property
    def device_id(self) -> str:
        return self.uuid or str(self.index)


NVML_LIBRARY = "libnvidia-ml.so.1"  # the name pynvml loads outside Windows (where no worker runs: fcntl)


def _nvml_library_present() -> bool:
    """Whether NVML's library loads here, as pynvml would load it (``nvmlInit`` fails
    without it).  Tried first because pynvml is a large module: a host without NVIDIA's
    driver never imports it, and its idle workers stay lighter."""
    import ctypes

    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return False
    return True


def detect_gpus() -> list[GPU]:
    """GPUs NVML reports; none (never an error) without a driver, a GPU or permission."""
    if not _nvml_library_present():
        return []
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid, model = pynvml.nvmlDeviceGetUUID(handle), pynvml.nvmlDeviceGetName(handle)
            gpus.append(
                GPU(
                    index,
                    uuid.decode() if isinstance(uuid, bytes) else uuid,
                    model.decode() if isinstance(model, bytes) else model,
                )
            )
        return gpus
    except Exception as exc:
        log.warning("NVML failed while listing GPUs: %s", exc)
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _visible_gpus(visible: str) -> list[GPU]:
    """GPUs named by CUDA_VISIBLE_DEVICES, read as CUDA reads it: up to the first entry
    that is neither an index nor a UUID (so ``-1`` or ``NoDevFiles`` mean none)."""
    gpus: list[GPU] = []
    for position, entry in enumerate(part.strip() for part in visible.split(",")):
        if entry.isdigit():
            gpus.append(GPU(int(entry), ""))
        elif entry.startswith(("GPU-", "MIG-")):
            gpus.append(GPU(position, entry))
        else:
            break
    return gpus


@dataclass
class Capacity:
    """A worker's total resources: cores, memory MB, disk MB and its GPUs."""

    cores: int
    memory: int
    disk: int
    gpus: list[GPU] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"cores": self.cores, "memory": self.memory, "disk": self.disk, "gpus": len(self.gpus)}


def physical_memory() -> int:
    """Bytes of RAM the kernel manages: the total ``psutil.virtual_memory()`` reports
    (Linux's MemTotal, macOS' hw.memsize), read without loading psutil."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def detect(workdir: str, gpus: bool = True) -> Capacity:
    """What this host offers; its GPUs only when ``gpus`` (NVML is not asked otherwise)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    found = detect_gpus() if gpus else []
    return Capacity(cores, physical_memory() // MB, shutil.disk_usage(workdir).free // MB, found)


def declared(
    workdir: str, cores: int | None, memory: int | None, disk: int | None, gpus: int | None, warn: bool = True
) -> Capacity:
    """Declared values win over detected ones; disagreements are logged, not refused
    (as warnings, unless ``warn`` is False: the declaration is known to be deliberate)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    # NVML is asked only when its answer is used: not when a scheduler chose the GPUs
    # (CUDA_VISIBLE_DEVICES) nor with --gpus 0
    found = detect(workdir, gpus=visible is None and gpus != 0)
    report = log.warning if warn else log.debug
    chosen = Capacity(
        cores if cores is not None else found.cores,
        memory if memory is not None else found.memory,
        disk if disk is not None else found.disk,
    )
    for name, value, seen in (
        ("cores", cores, found.cores),
        ("memory", memory, found.memory),
        ("disk", disk, found.disk),
    ):
        if value is not None and value > seen:
            report("declared --%s %s exceeds the %s detected; taking it as declared", name, value, seen)
    if visible is not None:  # a scheduler (Slurm, Kubernetes) already chose our GPUs
        pool = _visible_gpus(visible)
    else:
        pool = found.gpus
    count = gpus if gpus is not None else len(pool)
    if count > len(pool):
        report("declared --gpus %d but %d GPU(s) detected; taking it as declared", count, len(pool))
        pool = pool + [GPU(i, "", "") for i in range(len(pool), count)]
    chosen.gpus = pool[:count]
    if chosen.cores < 1:
        raise ValueError("a worker needs at least one core")
    return chosen


class Allocator:
    """Packs tasks into the worker's resources; never over-commits."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._held: dict[object, tuple[Request, list[GPU]]] = {}
        self._free_gpus = list(capacity.gpus)

    def free(self) -> dict[str, int]:
        with self._lock:
            used = self._used_locked()
            return {k: v - used[k] for k, v in self.capacity.as_dict().items()}

    def in_use(self) -> dict[str, int]:
        with self._lock:
            return self._used_locked()

    def _used_locked(self) -> dict[str, int]:
        used = {"cores": 0, "memory": 0, "disk": 0, "gpus": 0}
        for request, _ in self._held.values():
            used["cores"] += request.cores
            used["memory"] += request.memory
            used["disk"] += request.disk
            used["gpus"] += request.gpus
        return used

    def allocate(self, key: object, request: Request) -> list[GPU]:
        """Reserve ``request`` for ``key`` (one attempt of a task); its GPUs are returned."""
        with self._lock:
            if key in self._held:
                raise RuntimeError(f"{key!r} already holds resources")
            used = self._used_locked()
            total = self.capacity.as_dict()
            if any(getattr(request, k) > total[k] - used[k] for k in total):
                raise RuntimeError(f"{key!r} does not fit the free resources (claim and books disagree)")
            gpus, self._free_gpus = self._free_gpus[: request.gpus], self._free_gpus[request.gpus :]
            self._held[key] = (request, gpus)
            return gpus

    def release(self, key: object) -> None:
        with self._lock:
            held = self._held.pop(key, None)
            if held is not None:
                self._free_gpus.extend(held[1])
