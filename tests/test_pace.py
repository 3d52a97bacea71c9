"""The pace (protocol/pace.py) that sizes a claim's followers on a worker and a function's
packs on a manager: one moving average, two budgets."""

from __future__ import annotations

import pytest

from wq_redis.client.packs import PACK_SECONDS, PACK_TASKS, PackPlanner
from wq_redis.protocol.fields import FUNCTION_B, MEASURED_B
from wq_redis.protocol.pace import Pace
from wq_redis.worker.child.quick import BATCH_SECONDS, MAX_FOLLOWERS
from wq_redis.worker.child.quick import Pace as SlotPace


def test_nothing_is_grouped_before_a_call_was_measured():
    assert Pace(0.5).calls_within(10.0, 100) == 0
    assert SlotPace().followers() == 0
    assert PackPlanner().size(b"digest") == 1


def test_the_newest_run_weighs_the_given_weight():
    pace = Pace(0.25)
    pace.record(2, 4.0)  # the first run is the pace
    assert pace.seconds_per_call == 2.0
    pace.record(1, 6.0)
    assert pace.seconds_per_call == pytest.approx(0.75 * 2.0 + 0.25 * 6.0)


def test_calls_within_a_budget_are_capped_and_a_zero_wall_time_counts_as_fast_not_infinite():
    pace = Pace(0.5, seconds_per_call=0.01)
    assert pace.calls_within(0.05, 100) == 5
    assert pace.calls_within(10.0, 100) == 100
    instant = Pace(0.5, seconds_per_call=0.0)
    assert instant.calls_within(1.0, 10**9) == 10**6


@pytest.mark.parametrize("seconds_per_task", [1e-7, 1e-4, 0.001, 0.01, 0.019, 0.02, 0.5])
def test_a_slot_brings_followers_for_about_a_batch_of_work(seconds_per_task):
    expected = max(0, min(MAX_FOLLOWERS, int(BATCH_SECONDS / max(seconds_per_task, 1e-6)) - 1))
    assert SlotPace(seconds_per_task).followers() == expected


def test_a_function_packs_about_pack_seconds_of_its_calls():
    planner = PackPlanner()
    for _ in range(3):
        planner.observe({FUNCTION_B: b"quick", MEASURED_B: b'{"wall_time": 0.0001}'})
        planner.observe({FUNCTION_B: b"slow", MEASURED_B: b'{"wall_time": 1.0}'})
    assert planner.size(b"quick") == min(PACK_TASKS, round(PACK_SECONDS / 0.0001))
    assert planner.size(b"slow") == 1
