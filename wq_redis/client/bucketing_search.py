"""How Work Queue's bucketing modes cut a resource's history into buckets.

Each function takes the measured values of one resource, sorted by value (ties: the newer point first,
as CCTools' sorted insert puts it), as ``(value, significance)`` pairs, and returns the buckets as
``(top value, probability)`` pairs in increasing order.  The significance of a point is its arrival
number (1, 2, 3, ...), so recent tasks weigh more.  These follow CCTools' ``bucketing_greedy.c``,
``bucketing_det_greedy.c``, ``bucketing_exhaust.c``, ``bucketing_det_exhaust.c`` and
``bucketing_quantized.c``: the same candidates, the same cost formulas evaluated in the same order, the
same tie rules, so that a category's buckets are the ones Work Queue would have computed.  Only the
bookkeeping is Python's own (lists instead of linked lists and cursors, running sums instead of
re-scanning a range for every candidate break point).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]  # (value, significance)
Bucket = tuple[float, float]  # (top value, probability)


def _greedy_best_break(points: Sequence[Point], lo: int, hi: int, deterministic: bool) -> int:
    """The index in ``[lo, hi]`` whose break costs least (ties: the higher index, as CCTools' ``<=``).

    The cost of breaking after index ``b`` is the expected waste of allocating the lower bucket's top and,
    on a miss, the range's top; the probabilistic mode weighs each of the four hit/miss cases by the
    chance of choosing that bucket too.  Sums over the lower part run upward from ``lo`` as CCTools adds
    them; the upper part's sums are the range's total less the lower part's.
    """
    total_sig = 0.0
    total_val = 0.0
    for val, sig in points[lo : hi + 1]:
        total_sig += sig
        total_val += val * sig
    max_val = points[hi][0]
    lo_sig = 0.0
    lo_val = 0.0
    min_cost = -1.0
    best = lo
    for b in range(lo, hi + 1):
        break_val, sig = points[b]
        lo_sig += sig
        lo_val += break_val * sig
        hi_sig = total_sig - lo_sig
        p1 = lo_sig / total_sig
        p2 = hi_sig / total_sig
        exp_lo = lo_val / lo_sig
        exp_hi = 0.0 if hi_sig == 0 else (total_val - lo_val) / hi_sig
        if deterministic:
            cost = p1 * (break_val - exp_lo) + p2 * (break_val + max_val - exp_hi)
        else:
            cost = (
                p1 * (p1 * (break_val - exp_lo))
                + p1 * (p2 * (max_val - exp_lo))
                + p2 * (p1 * (break_val + max_val - exp_hi))
                + p2 * (p2 * (max_val - exp_hi))
            )
        if min_cost == -1 or cost <= min_cost:
            min_cost = cost
            best = b
    return best


def greedy_buckets(points: Sequence[Point], deterministic: bool) -> list[Bucket]:
    """Greedy bucketing: break ranges in two at their cheapest point until no break helps.

    Ranges are broken breadth first, as CCTools queues them; a range whose cheapest break is its own top
    stays whole, and a part of one point is not broken further.  The buckets' tops are the break points
    and the highest point; a bucket's probability is the share of significance of the points at or below
    its top and above the previous top.
    """
    n = len(points)
    ranges = [(0, n - 1)]
    breaks = [n - 1]
    for lo, hi in ranges:  # grows while iterated: breadth first
        b = _greedy_best_break(points, lo, hi, deterministic)
        if b == hi:
            continue
        breaks.append(b)
        if b + 1 != hi:
            ranges.append((b + 1, hi))
        if b != lo:
            ranges.append((lo, b))
    breaks.sort()
    probs = [0.0] * len(breaks)
    total_sig = 0.0
    i = 0
    for val, sig in points:
        while val > points[breaks[i]][0]:
            i += 1
        probs[i] += sig
        total_sig += sig
    return [(points[b][0], prob / total_sig) for b, prob in zip(breaks, probs)]


def _candidate_buckets(points: Sequence[Point], n: int) -> list[Bucket]:
    """The non-empty buckets among powers of two below ``max/n`` and ``n`` equal steps up to the max.

    A bucket's top becomes the highest point in it (the last one keeps the maximum itself); its
    probability is its share of the total significance.
    """
    max_val = points[-1][0]
    ratio = math.log(max_val / n) / math.log(2) if max_val > 0 else math.nan
    steps = max(0, math.floor(ratio)) if math.isfinite(ratio) else 0  # CCTools: log of 0 or less: no steps
    vals = [float(2**i) for i in range(steps)]
    vals += [max_val if i == n - 1 else max_val * (i + 1) / (n * 1.0) for i in range(n)]
    probs = [0.0] * len(vals)
    total_sig = 0.0
    bucket_sig = 0.0
    prev_val = 0.0
    i = 0
    k = 0
    while k < len(points) and i < len(vals):
        val, sig = points[k]
        if vals[i] < val:
            total_sig += bucket_sig
            probs[i] = bucket_sig
            vals[i] = prev_val
            i += 1
            bucket_sig = 0.0
        else:
            prev_val = val
            bucket_sig += sig
            k += 1
    probs[i] = bucket_sig
    total_sig += bucket_sig
    return [(v, p / total_sig) for v, p in zip(vals, probs) if p != 0]


def _bucket_expectations(points: Sequence[Point], buckets: Sequence[Bucket]) -> list[float]:
    """The significance-weighted mean of the points in each bucket."""
    exps = [0.0] * len(buckets)
    sigs = [0.0] * len(buckets)
    i = 0
    for val, sig in points:
        while val > buckets[i][0]:
            i += 1
        sigs[i] += sig
        exps[i] += val * sig
    return [e / s for e, s in zip(exps, sigs)]


def _exhaust_cost(points: Sequence[Point], buckets: Sequence[Bucket]) -> float:
    """Expected waste when a task of bucket i is first given a random bucket j, then larger ones.

    ``cost[i][j]`` for ``j >= i`` is a hit (the bucket's top less the task's expected use); for ``j < i``
    the task fails after using bucket j's top and is retried in a bucket above j, chosen by the buckets'
    probabilities renormalised over those above j.
    """
    exps = _bucket_expectations(points, buckets)
    n = len(buckets)
    cost = [[0.0] * n for _ in range(n)]
    for j in range(n):
        for i in range(j + 1):
            cost[i][j] = buckets[j][0] - exps[i]
    upper = []  # upper[j]: probabilities of buckets j+1.. renormalised to one
    for j in range(n):
        total = 0.0
        for _, p in buckets[j + 1 :]:
            total += p
        upper.append([p / total for _, p in buckets[j + 1 :]])
    for i in range(n - 1, -1, -1):
        for j in range(i - 1, -1, -1):
            c = buckets[j][0]
            for k in range(j + 1, n):
                c += upper[j][k - (j + 1)] * cost[i][k]
            cost[i][j] = c
    expected = 0.0
    for i in range(n):
        for j in range(n):
            expected += buckets[i][1] * buckets[j][1] * cost[i][j]
    return expected


def _det_exhaust_cost(points: Sequence[Point], buckets: Sequence[Bucket]) -> float:
    """Expected waste when a task tries the buckets in increasing order until one fits."""
    exps = _bucket_expectations(points, buckets)
    expected = 0.0
    tried = 0.0
    for (val, prob), exp in zip(buckets, exps):
        tried += val
        expected += prob * (tried - exp)
    return expected


def exhaustive_buckets(points: Sequence[Point], max_buckets: int, deterministic: bool) -> list[Bucket]:
    """Exhaustive bucketing: of the candidate sets for 1..max_buckets steps, the cheapest (first on ties)."""
    best: list[Bucket] = []
    min_cost = -1.0
    for n in range(1, max_buckets + 1):
        buckets = _candidate_buckets(points, n)
        cost = _det_exhaust_cost(points, buckets) if deterministic else _exhaust_cost(points, buckets)
        if min_cost == -1 or min_cost > cost:
            min_cost = cost
            best = buckets
    return best


def quantized_buckets(points: Sequence[Point], max_buckets: int) -> list[Bucket]:
    """Quantized bucketing: tops at the ``k/max_buckets`` quantiles; each bucket's share counts points."""
    size = len(points)
    buckets: list[Bucket] = []
    q = math.floor(1.0 * size / max_buckets)
    count = 0.0
    for i, (val, _) in enumerate(points, start=1):
        count += 1
        if i >= q:
            buckets.append((val, count / size))
            count = 0.0
            q = math.floor((1.0 + len(buckets)) / max_buckets * size)
    return buckets
