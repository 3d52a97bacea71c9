"""The benchmark (bench/, `make bench`) still runs: its quick mode for wq-redis alone.

Needs no peers (huey, RQ, Celery live in the bench venv, not in the project's), so it runs
with the project's venv; the readings are too small to mean anything and are not checked
against the goals, only for being there.  Deselect with ``-m 'not bench'``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import report  # noqa: E402
from bench.harness import percentile  # noqa: E402

pytestmark = pytest.mark.bench


@pytest.mark.timeout(300)
def test_quick_benchmark_of_wq_runs(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("WQ_REDIS_URL", "REDIS_URL")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--systems", "wq", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    wq = json.loads(out.read_text())["results"]["wq"]
    for key in ("per_call", "batch", "map", "cmd", "mib", "p50_ms", "p99_ms", "bytes_per_task"):
        assert wq[key] > 0, key
    assert wq["p50_ms"] <= wq["p99_ms"]
    assert wq["pubsub_calls"] == 0  # results never travel over pub/sub
    assert "per-call/s" in proc.stdout and "goal" in proc.stdout
    # it ran this checkout's wq_redis, not an installed copy elsewhere
    assert os.path.join(ROOT, "wq_redis") in wq["versions"]["wq_redis"]


def test_unknown_system_is_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--systems", "nosuch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and "unknown systems" in proc.stderr


def test_percentile_is_nearest_rank():
    values = sorted(float(i) for i in range(1, 101))
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0


def test_goals_compare_with_the_peers_of_the_same_run():
    wq = {
        "per_call": 5000.0,
        "batch": 50000.0,
        "map": 20000.0,
        "p50_ms": 0.7,
        "p99_ms": 1.5,
        "mib": 300.0,
        "bytes_per_task": 150.0,
        "cmd": 1100.0,
        "pubsub_calls": 0,
    }
    huey = {"per_call": 2000.0, "batch": 2500.0, "p50_ms": 1.0, "p99_ms": 1.4, "mib": 175.0, "bytes_per_task": 124.0}
    hand = {"per_call": 3000.0, "batch": 100000.0, "p50_ms": 0.3, "p99_ms": 0.6, "mib": 120.0, "bytes_per_task": 30.0}
    rows = {goal: result for goal, _, _, result in report.goals({"wq": wq, "huey": huey, "handwritten": hand})}
    assert rows["batch (submit_many) >= 10x fastest peer (huey)"] == "PASS"  # 50,000 >= 10 x 2,500
    assert rows["batch (map) >= 10x fastest peer (huey)"] == "FAIL"  # 20,000 < 25,000
    assert rows["batch (submit_many) >= 30% of hand-written batched"] == "PASS"
    assert rows["batch (map) >= 30% of hand-written batched"] == "FAIL"
    assert rows["per-call submit >= 2x fastest peer (huey)"] == "PASS"
    assert rows["round trip p50 <= hand-written p50 + 0.3 ms"] == "FAIL"  # 0.7 > 0.3 + 0.3
    assert rows["round trip p99 < 2 ms"] == "PASS"
    assert rows["1 MiB in+out >= best peer (huey)"] == "PASS"
    assert rows["Redis bytes per queued no-op <= 200"] == "PASS"
    assert rows["command tasks >= 2x Work Queue's 518/s"] == "PASS"
    assert rows["results never over pub/sub (PUBLISH/SUBSCRIBE calls)"] == "PASS"
    # a peer that was not run gives no target
    rows = {goal: result for goal, _, _, result in report.goals({"wq": wq})}
    assert rows["per-call submit >= 2x fastest peer"] == "n/a"
    assert "FAIL" not in [r for g, r in rows.items() if "peer" in g or "hand-written" in g]
    # the table prints every system and the ratios
    text = report.table({"wq": wq, "huey": huey})
    assert "wq / huey" in text and "2.50x" in text  # per-call 5000 / 2000
