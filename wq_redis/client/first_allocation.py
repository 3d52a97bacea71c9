"""The histograms and first-allocation formulas of Work Queue's automatic category modes
(CCTools' ``dttools/src/histogram.c`` and the MAX, MIN_WASTE and MAX_THROUGHPUT formulas of
``category.c``), apart from the category model that uses them (allocation.py)."""

from __future__ import annotations

import math


def _ieee_div(num: float, den: float) -> float:
    """C's double division, whose zero denominator gives inf or nan instead of raising."""
    if den != 0:
        return num / den
    return math.nan if num == 0 or math.isnan(num) else math.copysign(math.inf, num)


class Histogram:
    """``histogram.c`` plus category.c's per-bucket wall time: values fall in buckets
    ``(end - size, end]`` keyed by ``end``, so every key is a value rounded up to the size."""

    def __init__(self, bucket_size: int) -> None:
        if bucket_size <= 0:
            raise ValueError(f"bucket size should be larger than zero: {bucket_size}")
        self.bucket_size = bucket_size
        self.counts: dict[float, int] = {}
        self.times: dict[float, float] = {}
        self.max_value = 0.0  # histogram.c starts it at 0, so it never drops below 0

    def round_up(self, value: float) -> float:
        """``histogram_round_up``: the end of the bucket ``value`` falls in."""
        return float(math.ceil(value / self.bucket_size) * self.bucket_size)

    def add(self, value: float, wall_time: float) -> None:
        """``category_inc_histogram_count``: count the task and add its wall time to its bucket.
        Negative (unmeasured) values and times are ignored, as in C."""
        if value < 0 or wall_time < 0:
            return
        key = self.round_up(value)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.times[key] = self.times.get(key, 0.0) + wall_time
        self.max_value = max(self.max_value, value)

    def keys(self) -> list[float]:
        """``histogram_buckets``: bucket ends, ascending."""
        return sorted(self.counts)

    def accumulated_times(self, keys: list[float]) -> tuple[float, list[float], list[float]]:
        """``category_first_allocation_accum_times``: the mean wall time, running counts, and for
        each bucket the mean time of the tasks in larger buckets (its retries' cost).  Same
        summation order as C so results match to the last bit."""
        n = len(keys)
        counts_accum: list[float] = []
        for key in keys:
            counts_accum.append((counts_accum[-1] if counts_accum else 0.0) + self.counts[key])
        total = counts_accum[-1]
        times_accum = [0.0] * n
        for i in range(n - 2, -1, -1):
            times_accum[i] = times_accum[i + 1] + self.times[keys[i + 1]] / total
        tau_mean = times_accum[0] + self.times[keys[0]] / total
        return tau_mean, counts_accum, times_accum


def first_allocation_min_waste(h: Histogram, top: int) -> int:
    """MIN_WASTE: the bucket ``a`` minimising ``a * mean_time + top * time_of_larger_tasks``
    (a task that does not fit is retried at ``top``), capped by ``top``, rounded up."""
    if top < 0 or not h.counts:
        return -1
    keys = h.keys()
    tau_mean, _, times_accum = h.accumulated_times(keys)
    best, best_cost = top, math.inf  # C starts at DBL_MAX; no finite cost reaches it
    for i, key in enumerate(keys):
        a = int(key)
        if a < 1:
            continue
        cost = a * tau_mean + top * times_accum[i]
        if cost < best_cost:
            best, best_cost = a, cost
    return int(h.round_up(min(best, top)))


def first_allocation_max_throughput(h: Histogram, top: int) -> int:
    """MAX_THROUGHPUT: the bucket ``a`` maximising tasks per unit of time and resource,
    ``((top/a) * count(r <= a) + count(r > a)) / (mean_time + time_of_larger_tasks)``."""
    if top < 0 or not h.counts:
        return -1
    keys = h.keys()
    tau_mean, counts_accum, times_accum = h.accumulated_times(keys)
    best, best_rate = top, 0.0
    for i, key in enumerate(keys):
        a = int(key)
        if a < 1:
            continue
        before = counts_accum[i]
        after = counts_accum[-1] - before
        rate = _ieee_div((before * top) / a + after, tau_mean + times_accum[i])
        if rate > best_rate:
            best, best_rate = a, rate
    return int(h.round_up(min(best, top)))


def first_allocation_max_seen(h: Histogram, top: int, max_worker: int, max_explicit: int) -> int:
    """MAX: the largest value seen plus a third of a bucket, rounded up, capped by the explicit
    category maximum and the largest worker (whichever are set)."""
    if top < 0 or not h.counts:
        return -1
    rounded = h.round_up(h.max_value + math.floor(h.bucket_size / 3))
    caps = [cap for cap in (max_explicit, max_worker) if cap > -1]
    return int(min([rounded, *caps]))
