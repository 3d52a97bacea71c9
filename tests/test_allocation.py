"""Work Queue's category allocation model (client/allocation.py), with numbers worked out by
hand from CCTools' category.c and histogram.c (bucket sizes: cores 1, memory 250, disk 250)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from wq_redis.client.allocation import (
    ERROR,
    FIRST,
    FIXED,
    MAX,
    MAX_MODE,
    MAX_THROUGHPUT,
    MIN_WASTE,
    Categories,
    Category,
)
from wq_redis.client.first_allocation import Histogram


class FakeBucketing:
    """Stands in for client/bucketing.py: records reports, predicts a fixed allocation."""

    def __init__(self, mode: int) -> None:
        self.mode = mode
        self.reports: list[tuple[int, dict[str, float], int]] = []

    def add_report(self, task_id: int, measured: Mapping[str, float], success: int) -> None:
        self.reports.append((task_id, dict(measured), success))

    def predict(self, task_id: int) -> Mapping[str, float]:
        return {"cores": 2, "memory": 700, "disk": -1, "gpus": -1}


def category(mode: int, steady_n_tasks: int = 25) -> Category:
    cats = Categories(bucketing_factory=FakeBucketing)
    cats.tune_bucket_size("category-steady-n-tasks", steady_n_tasks)
    cats.specify_mode("c", mode)
    return cats.get("c")


def done(
    c: Category, wall: float = 10.0, ok: bool = True, worker: Mapping[str, int] | None = None, **measured: float
) -> bool:
    return c.accumulate(measured, wall, ok, 1 if ok else 0, worker, task_id=1)


def test_histogram_rounds_up_to_bucket_ends() -> None:
    h = Histogram(250)
    assert [h.round_up(v) for v in (0, 1, 250, 251, 800, 1000)] == [0, 250, 250, 500, 1000, 1000]
    assert Histogram(1).round_up(1.2) == 2
    h.add(800, 5)
    h.add(900, 7)
    h.add(-1, 3)  # unmeasured: ignored
    assert h.keys() == [1000] and h.counts[1000] == 2 and h.times[1000] == 12 and h.max_value == 900


def test_max_mode_first_allocation_is_max_seen_plus_a_third_of_a_bucket() -> None:
    c = category(MAX_MODE, steady_n_tasks=1)
    assert done(c, cores=1, memory=100, disk=800)  # a new maximum: the first allocation is reset
    assert c.first_allocation is None  # total_tasks was still 0 when the 1st completion asked
    assert done(c, cores=1, memory=100, disk=800)
    # disk 800 + floor(250/3)=83 -> 883 -> 1000; memory 183 -> 250; cores 1 + 0; gpus never labeled
    assert c.first_allocation == {"cores": 1, "memory": 250, "disk": 1000, "gpus": -1}
    assert c.steady
    assert c.max_resources({}, FIRST) == {"cores": 1, "memory": 250, "disk": 1000, "gpus": -1}
    assert c.max_resources({}, MAX) == {"cores": -1, "memory": -1, "disk": -1, "gpus": -1}  # a whole worker


def test_max_mode_first_allocation_capped_by_explicit_max_and_largest_worker() -> None:
    c = category(MAX_MODE, steady_n_tasks=1)
    c.set_max({"disk": 950})
    done(c, disk=800)
    done(c, disk=800, worker={"cores": 4, "memory": 2000, "disk": 900, "gpus": 0})
    assert c.first_allocation is not None and c.first_allocation["disk"] == 900  # min(1000, 950, 900)
    done(c, disk=800, worker={"disk": 5000})
    assert c.first_allocation["disk"] == 950


def test_steady_state_after_n_completions() -> None:
    c = category(MAX_MODE)  # the default: 25
    for _ in range(24):
        done(c, memory=100)
    assert c.first_allocation is None
    assert done(c, memory=100)  # the 25th completion computes it
    assert c.first_allocation is not None and c.first_allocation["memory"] == 250
    assert not c.steady and c.max_resources({}, FIRST)["memory"] == -1  # steady is decided on the next one
    done(c, memory=100)
    assert c.steady and c.max_resources({}, FIRST)["memory"] == 250


def test_new_maximum_resets_first_allocation_unless_steady() -> None:
    c = category(MAX_MODE, steady_n_tasks=2)
    done(c, memory=100)
    assert done(c, memory=100) and c.first_allocation is not None
    assert done(c, memory=300)  # above round_up(100) = 250, not steady yet
    assert c.first_allocation is None and c.completions_since_last_reset == 1

    c = category(MAX_MODE, steady_n_tasks=3)
    for _ in range(4):  # the 3rd computes the first allocation, the 4th finds the category steady
        done(c, memory=100)
    assert c.steady
    assert done(c, memory=300) is False  # steady: no reset, and 5 % 3 != 0 so no update
    assert c.first_allocation is not None and c.first_allocation["memory"] == 250
    assert c.max_resources_seen["memory"] == 300


def test_explicit_max_means_no_new_maximum() -> None:
    c = category(MAX_MODE, steady_n_tasks=2)
    c.set_max({"memory": 4000})
    done(c, memory=100)
    done(c, memory=100)
    assert done(c, memory=3000) is False and c.first_allocation is not None


def test_exhausted_task_counts_as_seen_not_in_histograms() -> None:
    c = category(MAX_MODE, steady_n_tasks=1)
    done(c, ok=False, memory=5000)
    assert c.max_resources_seen["memory"] == 5000
    assert c.histograms["memory"].counts == {} and c.completions_since_last_reset == 0


@pytest.mark.parametrize(
    ("mode", "tasks", "expected"),
    [
        # a 900 MB task of 10 s and three 200 MB ones: mean time 10, 2.5 s above bucket 250.
        # waste(250) = 250*10 + 900*2.5 = 4750 < waste(1000) = 10000
        (MIN_WASTE, [(900, 10.0)] + [(200, 10.0)] * 3, 250),
        # rate(250) = (3*900/250 + 1)/12.5 = 0.944 > rate(1000) = (4*900/1000)/10 = 0.36
        (MAX_THROUGHPUT, [(900, 10.0)] + [(200, 10.0)] * 3, 250),
        # three 900 MB tasks of 100 s and a 200 MB one of 1 s: mean 75.25, 75 s above 250.
        # waste(250) = 18812.5 + 67500 > waste(1000) = 75250 -> 1000, capped at top 900, rounded to 1000
        (MIN_WASTE, [(900, 100.0)] * 3 + [(200, 1.0)], 1000),
        # rate(250) = (900/250 + 3)/150.25 = 0.0439 < rate(1000) = 3.6/75.25 = 0.0478
        (MAX_THROUGHPUT, [(900, 100.0)] * 3 + [(200, 1.0)], 1000),
    ],
)
def test_min_waste_and_max_throughput_choose_known_buckets(
    mode: int, tasks: list[tuple[int, float]], expected: int
) -> None:
    c = category(mode, steady_n_tasks=4)
    for memory, wall in tasks:
        done(c, wall=wall, cores=1, memory=memory)
    assert c.first_allocation == {"cores": 1, "memory": expected, "disk": -1, "gpus": -1}


def test_min_waste_tie_keeps_the_smaller_bucket() -> None:
    c = category(MIN_WASTE, steady_n_tasks=2)
    done(c, wall=3.0, memory=1000)
    done(c, wall=1.0, memory=200)
    # mean time 2, 1.5 s above 250: waste(250) = 500 + 1000*1.5 = 2000 = waste(1000) = 1000*2
    assert c.first_allocation is not None and c.first_allocation["memory"] == 250


def test_min_waste_steady_allocations() -> None:
    c = category(MIN_WASTE, steady_n_tasks=4)
    for memory in (900, 200, 200, 200, 200):
        done(c, cores=1, memory=memory)
    assert c.steady
    assert c.max_resources({}, FIRST) == {"cores": 1, "memory": 250, "disk": -1, "gpus": -1}
    assert c.max_resources({}, MAX) == {"cores": 1, "memory": 900, "disk": -1, "gpus": -1}  # largest seen
    assert c.max_resources({"memory": 300}, FIRST)["memory"] == 300  # the task's own value wins


def test_min_allocation_floors_first_allocation_and_counts_as_seen() -> None:
    c = category(MAX_MODE, steady_n_tasks=1)
    c.set_min({"memory": 600})
    assert c.max_resources_seen["memory"] == 600
    done(c, memory=100)
    done(c, memory=100)
    assert c.first_allocation is not None and c.first_allocation["memory"] == 600


def test_next_label() -> None:
    fixed = category(FIXED)
    assert fixed.next_label(FIRST, True, {}, {"memory": 1}) == ERROR
    assert fixed.next_label(FIRST, False, {}, None) == FIRST
    c = category(MAX_MODE)
    c.set_max({"memory": 1000})
    assert c.next_label(FIRST, True, {}, {"memory": 900}) == MAX
    assert c.next_label(FIRST, True, {}, {"memory": 1200}) == ERROR  # over the category maximum
    assert c.next_label(FIRST, True, {"memory": 800}, {"memory": 900}) == ERROR  # over the task's own
    assert c.next_label(FIRST, True, {"memory": 2000}, {"memory": 1200}) == MAX  # the task's value wins
    assert c.next_label(FIRST, True, {}, None) == MAX
    assert c.next_label(MAX, False, {}, {"memory": 5000}) == MAX


def test_fixed_mode_max_and_min_resources() -> None:
    c = category(FIXED)
    c.set_max({"cores": 4, "memory": 1000})
    c.set_min({"memory": 500})
    assert c.max_resources({"cores": 2}, FIRST) == {"cores": 2, "memory": 1000, "disk": -1, "gpus": -1}
    assert c.min_resources({"memory": 200}, FIRST) == {"cores": 4, "memory": 500, "disk": -1, "gpus": -1}


def test_min_resources_prefers_allocation_over_seen() -> None:
    c = category(MAX_MODE)
    c.set_max({"memory": 2000})
    done(c, memory=900, disk=300)
    assert c.min_resources({}, MAX) == {"cores": -1, "memory": 2000, "disk": 300, "gpus": -1}


def test_task_min_resources_falls_back_to_largest_worker() -> None:
    c = category(MAX_MODE)
    done(c, memory=5000)  # an outlier no worker can hold
    assert c.min_resources({}, FIRST)["memory"] == 5000
    worker = {"cores": 4, "memory": 2000, "disk": 3000, "gpus": 0}
    assert c.task_min_resources({}, FIRST, 1, worker) == {"cores": 4, "memory": 2000, "disk": 3000, "gpus": 0}
    assert c.task_min_resources({}, MAX, 1, worker)["memory"] == 5000  # only a first try falls back


def test_bucketing_modes_report_and_predict() -> None:
    c = category(4)
    fake = c.bucketing
    assert isinstance(fake, FakeBucketing) and fake.mode == 4
    c.accumulate({"memory": 300}, 5.0, True, 1, None, task_id=7)
    c.accumulate({"memory": 900}, 5.0, False, 0, None, task_id=8)
    c.accumulate({"memory": 900}, 5.0, False, -1, None, task_id=9)
    assert [(t, m["memory"], s) for t, m, s in fake.reports] == [(7, 300, 1), (8, 900, 0)]
    assert fake.reports[0][1] == {"cores": -1, "gpus": -1, "memory": 300, "disk": -1}
    assert c.max_resources({}, FIRST, task_id=10) == {"cores": 2, "memory": 700, "disk": -1, "gpus": -1}
    assert c.max_resources({}, FIRST) == {"cores": -1, "memory": -1, "disk": -1, "gpus": -1}  # no task
    c.set_max({"memory": 500})
    assert c.max_resources({"cores": 1}, FIRST, task_id=10) == {"cores": 1, "memory": 500, "disk": -1, "gpus": -1}
    c.set_mode(5)
    assert c.bucketing is fake  # made once, as in category.c


def test_categories_default_mode_and_tunables() -> None:
    cats = Categories(bucketing_factory=FakeBucketing)
    assert cats.get(None) is cats.get("default") and cats.get("a").mode == FIXED
    assert cats.specify_mode(None, MAX_MODE)
    assert cats.get("a").mode == FIXED and cats.get("b").mode == MAX_MODE  # only new categories
    assert not cats.specify_mode("a", 42) and cats.get("a").mode == FIXED
    cats.tune_bucket_size("memory", 100)
    cats.tune_bucket_size("category-steady-n-tasks", 1)
    c = cats.get("new")
    done(c, memory=800)
    done(c, memory=800)
    assert c.first_allocation is not None and c.first_allocation["memory"] == 900  # 800 + 33 -> 900
    assert cats.get("b").histograms["memory"].bucket_size == 250
    with pytest.raises(ValueError):
        cats.tune_bucket_size("memroy", 10)


def test_first_allocation_guess() -> None:
    c = category(MAX_MODE)
    c.set_first_allocation_guess({"cores": 2, "memory": 1500})
    assert c.steady
    assert c.max_resources({}, FIRST) == {"cores": 2, "memory": 1500, "disk": -1, "gpus": -1}
    assert c.max_resources_seen["memory"] == 1500
