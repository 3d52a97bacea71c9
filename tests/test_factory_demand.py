"""Work Queue's factory rule (work_queue_factory.c): how many workers, how many new this cycle."""

from __future__ import annotations

from wq_redis.client.stats import Stats
from wq_redis.embedded.factory_demand import Demand, Sizing, demand_from_stats, workers_needed, workers_to_start


def test_one_worker_per_task_waiting_or_running_between_min_and_max():
    sizing = Sizing(min_workers=1, max_workers=3)
    assert workers_needed(Demand(), sizing) == 1
    assert workers_needed(Demand(tasks_waiting=1, tasks_on_workers=1), sizing) == 2
    assert workers_needed(Demand(tasks_waiting=10), sizing) == 3


def test_a_worker_takes_as_many_tasks_as_its_cores_unless_tasks_per_worker_says():
    assert workers_needed(Demand(tasks_waiting=10), Sizing(min_workers=0, cores=4)) == 3
    assert workers_needed(Demand(tasks_waiting=10), Sizing(min_workers=0, cores=4, tasks_per_worker=5)) == 2


def test_declared_resources_ask_for_more_workers_of_the_factory_size():
    sizing = Sizing(min_workers=0, cores=4, memory=1000)
    assert workers_needed(Demand(tasks_waiting=2, cores=2, memory=5000), sizing) == 5


def test_a_minimum_above_the_maximum_is_lowered_to_it():
    assert workers_needed(Demand(), Sizing(min_workers=8, max_workers=2)) == 2


def test_no_more_than_workers_per_cycle_on_their_way():
    assert workers_to_start(needed=10, started=0, connected=0, per_cycle=5) == 5
    assert workers_to_start(needed=10, started=5, connected=2, per_cycle=5) == 2  # 3 still coming
    assert workers_to_start(needed=10, started=0, connected=0, per_cycle=0) == 10  # 0: no cap


def test_workers_from_elsewhere_count_and_surplus_is_never_removed():
    assert workers_to_start(needed=3, started=1, connected=3, per_cycle=5) == 0  # 2 came from elsewhere
    assert workers_to_start(needed=1, started=3, connected=3, per_cycle=5) == 0


def test_the_demand_of_one_stats_snapshot():
    stats = Stats(
        tasks_waiting=3,
        tasks_on_workers=1,
        workers_connected=1,
        committed_cores=2,
        committed_gpus=1,
        waiting_by_queue={"c1.m100.d0.g0|": 2, "c4.m0.d0.g2|gpu": 1, "not a class|": 7},
    )
    demand = demand_from_stats(stats)
    assert (demand.tasks_waiting, demand.tasks_on_workers, demand.workers_connected) == (3, 1, 1)
    assert (demand.cores, demand.memory, demand.gpus) == (2 + 4 + 2, 200, 2 + 1)
