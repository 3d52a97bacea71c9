"""A GPU provider for workers on machines without GPUs: ``WQ_GPU_PROVIDER=fake_gpus:provider``
(tests/ is on the workers' path).  Two boards with fixed readings."""

from __future__ import annotations

from wq_redis.worker.metrics import GpuSample

GiB = 1024**3
BOARDS = [
    GpuSample(0, "GPU-00000000-fake-0000-0000-000000000000", "Fake A100", 0.75, 3 * GiB, 40 * GiB),
    GpuSample(1, "GPU-11111111-fake-1111-1111-111111111111", "Fake A100", 0.25, 1 * GiB, 40 * GiB),
]


class FakeGpus:
    def sample(self) -> list[GpuSample]:
        return list(BOARDS)

    def close(self) -> None:
        pass


def provider() -> FakeGpus:
    return FakeGpus()
