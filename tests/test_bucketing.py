"""Work Queue's bucketing allocation modes (client/bucketing.py), with numbers worked out by hand from
CCTools' algorithms (bucketing.c, bucketing_greedy.c, bucketing_exhaust.c, bucketing_manager.c)."""

from __future__ import annotations

import random

import pytest

from wq_redis.client.bucketing import (
    DET_EXHAUSTIVE_BUCKETING,
    DET_GREEDY_BUCKETING,
    EXHAUSTIVE_BUCKETING,
    GREEDY_BUCKETING,
    QUANTIZED_BUCKETING,
    BucketingManager,
)

DEFAULT = {"cores": 1, "memory": 1000, "disk": 1000, "gpus": 0}


class Draws(random.Random):
    """An rng whose draws are given, to choose buckets on purpose: a prediction in a random mode past
    sampling draws once per resource (cores, memory, disk, gpus), so each draw here is repeated 4 times."""

    def __init__(self, *draws: float) -> None:
        super().__init__(0)
        self.draws = [d for d in draws for _ in range(4)]

    def random(self) -> float:
        return self.draws.pop(0)


def finish(m: BucketingManager, memories: list[float], first_id: int = 100) -> None:
    """Tasks that succeeded with one core, these memories, 10 MB disk and no gpus."""
    for i, mem in enumerate(memories):
        m.add_report(first_id + i, {"cores": 1, "memory": mem, "disk": 10, "gpus": 0}, 1)


def assert_buckets(m: BucketingManager, expected: list[tuple[float, float]]) -> None:
    """The memory buckets' tops exactly, their probabilities to rounding."""
    buckets = m.states["memory"].buckets
    assert [top for top, _ in buckets] == [top for top, _ in expected]
    assert [prob for _, prob in buckets] == pytest.approx([prob for _, prob in expected])


NINE_SMALL_ONE_BIG = [100] * 9 + [1000]  # the 1000 MB task is the newest: significance 10 of 55


@pytest.mark.parametrize("mode", [4, 5, 6, 7, 8])
def test_a_fresh_manager_gives_the_defaults(mode: int) -> None:
    m = BucketingManager(mode, Draws())
    assert m.predict(-1) == DEFAULT
    assert m.predict(7) == DEFAULT


def test_not_a_bucketing_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="not a bucketing allocation mode: 3"):
        BucketingManager(3)
    with pytest.raises(ValueError, match="success must be"):
        BucketingManager(GREEDY_BUCKETING).add_report(1, DEFAULT, -1)


def test_sampling_phase_retry_doubles_the_exceeded_resource_from_the_default() -> None:
    m = BucketingManager(GREEDY_BUCKETING, Draws())
    assert m.predict(1) == DEFAULT
    m.add_report(1, {"cores": 1, "memory": 1200, "disk": 10, "gpus": 0}, 0, exceeded={"memory"})
    # memory: 1000 * 2 ** (floor(log2(1200 / 1000)) + 1) = 2000.  The others: max(next power over what
    # was used, default): cores 1 -> 2 (a power strictly above 1), disk 10 -> max(15.625, 1000).
    retry = {"cores": 2, "memory": 2000, "disk": 1000, "gpus": 0}
    assert m.predict(1) == retry
    assert m.predict(1) == retry  # a run task keeps its prediction until its next report
    m.add_report(1, {"cores": 1, "memory": 4100, "disk": 10, "gpus": 0}, 0, exceeded={"memory"})
    assert m.predict(1)["memory"] == 8000  # 1000 * 2 ** (floor(log2(4.1)) + 1)


def test_exhaustion_without_exceeded_names_the_resources_over_the_last_allocation() -> None:
    m = BucketingManager(DET_GREEDY_BUCKETING)
    m.predict(1)
    m.add_report(1, {"cores": 0.5, "memory": 1000, "disk": 3000, "gpus": None}, 0)
    retry = m.predict(1)
    assert (retry["memory"], retry["disk"]) == (2000, 4000)  # both at or over 1000: grown past what was used
    assert (retry["cores"], retry["gpus"]) == (1, 0)  # cores under its allocation; gpus not measured


def test_the_first_ten_successes_are_sampling_then_buckets_are_computed() -> None:
    m = BucketingManager(DET_GREEDY_BUCKETING)
    finish(m, NINE_SMALL_ONE_BIG[:9])
    assert m.predict(-1) == DEFAULT  # 9 points: still sampling
    finish(m, NINE_SMALL_ONE_BIG[9:], first_id=200)
    assert_buckets(m, [(100, 45 / 55), (1000, 10 / 55)])
    assert m.predict(-1) == {"cores": 1, "memory": 100, "disk": 10, "gpus": 0}


def test_greedy_draws_a_bucket_by_its_probability() -> None:
    # Breaking after the nine 100s costs 1000 * p1 * p2 = 148.8 (p1 = 45/55, p2 = 10/55), less than any
    # other break (no break: 736.4); the 100s then cannot be broken.  Buckets: 100 (45/55), 1000 (10/55).
    m = BucketingManager(GREEDY_BUCKETING, Draws(0.81, 0.82))
    finish(m, NINE_SMALL_ONE_BIG)
    assert_buckets(m, [(100, 45 / 55), (1000, 10 / 55)])
    assert m.predict(-1)["memory"] == 100  # 0.818 > 0.81
    assert m.predict(-1)["memory"] == 1000  # 0.818 <= 0.82


def test_retry_takes_a_bucket_above_what_was_used_then_grows_past_the_top() -> None:
    m = BucketingManager(DET_GREEDY_BUCKETING)
    finish(m, NINE_SMALL_ONE_BIG)
    assert m.predict(1)["memory"] == 100
    m.add_report(1, {"cores": 1, "memory": 150, "disk": 10, "gpus": 0}, 0, exceeded={"memory"})
    assert m.predict(1)["memory"] == 1000
    m.add_report(1, {"cores": 1, "memory": 1200, "disk": 10, "gpus": 0}, 0, exceeded={"memory"})
    assert m.predict(1)["memory"] == 2000  # past the top bucket: 1000 * 2 ** (floor(log2(1.2)) + 1)


LINEAR = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]


@pytest.mark.parametrize("mode", [GREEDY_BUCKETING, DET_GREEDY_BUCKETING])
def test_greedy_keeps_an_even_spread_in_one_bucket(mode: int) -> None:
    m = BucketingManager(mode, Draws(0.0))
    finish(m, LINEAR)
    assert m.states["memory"].buckets == [(1000, 1.0)]
    assert m.predict(-1)["memory"] == 1000


@pytest.mark.parametrize("mode", [EXHAUSTIVE_BUCKETING, DET_EXHAUSTIVE_BUCKETING])
def test_exhaustive_cuts_the_same_spread_at_its_powers_of_two(mode: int) -> None:
    # With one linear step the candidates are 1, 2, ..., 256 (powers of two below 1000) and 1000: 100 falls
    # in (64, 128], 200 in (128, 256], the rest under 1000; tops become the highest point in each.
    m = BucketingManager(mode, Draws(0.01, 0.05, 0.06))
    finish(m, LINEAR)
    assert_buckets(m, [(100, 1 / 55), (200, 2 / 55), (1000, 52 / 55)])
    if mode == DET_EXHAUSTIVE_BUCKETING:
        assert [m.predict(-1)["memory"] for _ in range(3)] == [100, 100, 100]
    else:
        assert [m.predict(-1)["memory"] for _ in range(3)] == [100, 200, 1000]


@pytest.mark.parametrize("mode", [DET_GREEDY_BUCKETING, DET_EXHAUSTIVE_BUCKETING])
def test_deterministic_modes_repeat_and_leave_the_rng_alone(mode: int) -> None:
    runs = []
    for seed in (1, 2):
        rng = random.Random(seed)
        state = rng.getstate()
        m = BucketingManager(mode, rng)
        finish(m, [300, 1000, 300, 1000, 300, 1000, 300, 1000, 300, 2000])
        runs.append([m.predict(-1) for _ in range(5)])
        assert rng.getstate() == state
    assert runs[0] == runs[1]
    assert {p["memory"] for p in runs[0]} == {300}


def test_random_modes_repeat_with_the_same_seed() -> None:
    def draws(seed: int) -> list[int]:
        m = BucketingManager(GREEDY_BUCKETING, random.Random(seed))
        finish(m, [300, 1000] * 5)
        return [m.predict(-1)["memory"] for _ in range(40)]

    assert draws(5) == draws(5)
    assert set(draws(5)) == {300, 1000}


def test_quantized_gives_the_largest_seen_then_doubles_past_it() -> None:
    m = BucketingManager(QUANTIZED_BUCKETING, Draws(0.0, 0.5, 0.5))
    finish(m, NINE_SMALL_ONE_BIG)
    assert m.states["memory"].buckets == [(1000, 1.0)]  # Work Queue gives quantized bucketing one bucket
    assert m.predict(3)["memory"] == 1000
    m.add_report(3, {"cores": 1, "memory": 1000, "disk": 10, "gpus": 0}, 0, exceeded={"memory"})
    # Past sampling, Work Queue lifts the resources not exceeded too, above the most the task used:
    # cores 1 -> 2, disk 10 -> 1000 * 2 ** (floor(log2(10 / 1000)) + 1) = 15.625, sent as 16.
    assert m.predict(3) == {"cores": 2, "memory": 2000, "disk": 16, "gpus": 0}
    assert m.predict(3) == {"cores": 2, "memory": 2000, "disk": 16, "gpus": 0}  # kept, no new draw


def test_a_success_forgets_the_task_and_counts_its_values() -> None:
    m = BucketingManager(DET_GREEDY_BUCKETING)
    m.predict(1)
    m.add_report(1, {"cores": 1, "memory": 5000, "disk": 10, "gpus": 0}, 0, exceeded={"memory"})
    m.add_report(1, {"cores": 1, "memory": 6000, "disk": 10, "gpus": 0}, 1)
    assert m.predict(1) == DEFAULT  # a new task again, sampling: one point of ten
    assert len(m.states["memory"].points) == 1
