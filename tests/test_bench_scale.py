"""The scale benchmark's arithmetic (bench/scale/report.py): readings from INFO and the
fleets' counters, the table, the per-core figures.  The simulation itself runs with
``make bench-scale``, never here."""

from __future__ import annotations

import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.scale import report  # noqa: E402


def info(cpu: float, commands: int, **calls: int) -> dict:
    return {
        "used_cpu_sys": cpu / 4,
        "used_cpu_user": 3 * cpu / 4,
        "total_commands_processed": commands,
        **{f"cmdstat_{name}": {"calls": n, "usec": 0} for name, n in calls.items()},
    }


def fleet(renewals: int, waits: int, claims: int, heartbeat: float = 0.5) -> dict:
    return {"workers": 100, "renewals": renewals, "blocking_claims": waits, "claims": claims, "heartbeat_s": heartbeat}


def test_idle_reading_nets_out_the_baseline_and_scales_to_the_cadence():
    before, after = info(1.0, 1000, evalsha=10, blpop=5), info(1.5, 21000, evalsha=3010, blpop=1005)
    # 10 s, 100 workers: 200 renewals/s due, 100 waits/s due; made 150/s and 100/s
    reading = report.idle_reading(before, after, fleet(0, 0, 0), fleet(1500, 1000, 2000), 10.0, 100, 0.01, 1.0)
    assert reading["redis_cpu_pct"] == 5.0
    assert reading["us_per_worker_s"] == 400.0  # (0.05 - 0.01) cores / 100 workers
    assert reading["commands_s"] == 2000.0
    assert reading["busiest"] == {"evalsha": 300.0, "blpop": 100.0}
    assert reading["cadence"] == 0.75
    assert reading["us_per_worker_s_full"] == round(400 / 0.75, 1)


def test_idle_reading_of_real_workers_has_no_cadence():
    reading = report.idle_reading(info(0, 0), info(0.2, 100), None, None, 10.0, 4, 0.0, 1.0)
    assert reading["cadence"] is None
    assert reading["us_per_worker_s_full"] == reading["us_per_worker_s"] == 5000.0


def test_busy_reading_per_task_and_latencies():
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    counters = {"latencies": latencies, "woken_empty": 50, "workers_with_tasks": 7, "errors": 0}
    reading = report.busy_reading(info(0, 0), info(0.3, 0), 2.0, 10_000, 0.05, counters)
    assert reading["tasks_s"] == 5000.0
    assert reading["us_per_task"] == 30.0
    assert reading["net_us_per_task"] == 20.0  # less 0.05 cores x 2 s of idle cost
    assert (reading["claim_p50_ms"], reading["claim_p99_ms"]) == (50.0, 99.0)
    assert reading["woken_empty_per_task"] == 0.005


def test_percentile_is_nearest_rank():
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    assert math.isnan(report.percentile([], 0.5))


def test_memory_reading_separates_connections():
    before = {"used_memory": 1_000_000, "mem_clients_normal": 100_000}
    after = {"used_memory": 3_000_000, "mem_clients_normal": 1_100_000}
    assert report.memory_reading(before, after, 100, 200) == {
        "used_bytes": 10_000,
        "connections_bytes": 10_000,
        "bytes_per_connection": 5_000,
    }


def test_table_and_per_core():
    idle = {"redis_cpu_pct": 1.0, "us_per_worker_s": 100.0, "us_per_worker_s_full": 125.0, "commands_s": 2300.0}
    idle["cadence"] = 0.8
    memory = {"record_bytes": 800, "connections_bytes": 45_000}
    busy = {"tasks_s": 20_000.0, "us_per_task": 30.0, "net_us_per_task": 25.0, "claim_p50_ms": float("nan")}
    rows = [
        report.row("100 sim", 100, 200, idle, memory, busy),
        report.row("4 real", 4, 8, {**idle, "cadence": None}, memory, busy),
    ]
    text = report.table(rows).splitlines()
    assert text[0].split()[0] == "workers" and len(text) == 3
    assert "100 sim" in text[1] and "20,000" in text[1] and "-" in text[2].split()
    assert report.per_core(rows) == {"from_workers": 100, "idle_workers_per_core": 8000, "tasks_s_per_core": 40000}
