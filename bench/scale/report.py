"""The scale benchmark's arithmetic and its table: pure functions of INFO readings and the
fleets' counters (tests/test_bench_scale.py checks them), no Redis here."""

from __future__ import annotations

import math
from typing import Any

TOP_COMMANDS = 4  # commands named per row in the JSON (the busiest, by calls)


def cpu_seconds(info: dict[str, Any]) -> float:
    """Redis' CPU time so far (all its threads), from INFO cpu."""
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def command_calls(info: dict[str, Any]) -> dict[str, int]:
    """Calls per command from INFO commandstats (redis-py parses ``cmdstat_NAME`` lines)."""
    return {
        key[len("cmdstat_") :]: int(value["calls"])
        for key, value in info.items()
        if key.startswith("cmdstat_") and isinstance(value, dict)
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def busiest(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    """Calls per second of the busiest commands between two commandstats readings."""
    rates = {name: (after[name] - before.get(name, 0)) / seconds for name in after}
    top = sorted(rates.items(), key=lambda item: -item[1])[:TOP_COMMANDS]
    return {name: round(rate, 1) for name, rate in top if rate > 0}


def cpu_rate(before: dict[str, Any], after: dict[str, Any], seconds: float) -> float:
    """Redis CPU seconds per second (1.0 = one core) between two INFO readings."""
    return (cpu_seconds(after) - cpu_seconds(before)) / seconds


def idle_reading(
    before: dict[str, Any],
    after: dict[str, Any],
    fleet_before: dict[str, Any] | None,
    fleet_after: dict[str, Any] | None,
    seconds: float,
    workers: int,
    baseline_cpu: float,
    block_seconds: float,
) -> dict[str, Any]:
    """What idle workers cost Redis over ``seconds``: INFO before and after, and the summed
    fleet counters before and after (None for real workers).  ``baseline_cpu``: Redis' CPU
    rate with the manager and no workers, subtracted before dividing by the workers.
    ``cadence``: the renewals and the lane's waits made over those a real worker makes (a
    renewal every heartbeat period, a wait every ``block_seconds``; 1.0: the simulation
    kept up)."""
    rate = cpu_rate(before, after, seconds)
    commands = (int(after["total_commands_processed"]) - int(before["total_commands_processed"])) / seconds
    reading: dict[str, Any] = {
        "workers": workers,
        "seconds": round(seconds, 2),
        "redis_cpu_pct": round(100 * rate, 2),
        "us_per_worker_s": round(1e6 * max(rate - baseline_cpu, 0.0) / workers, 1),
        "commands_s": round(commands, 1),
        "commands_per_worker_s": round(commands / workers, 2),
        "busiest": busiest(command_calls(before), command_calls(after), seconds),
        "cadence": None,
    }
    if fleet_before is not None and fleet_after is not None:
        renewals = (fleet_after["renewals"] - fleet_before["renewals"]) / seconds
        waits = (fleet_after["blocking_claims"] - fleet_before["blocking_claims"]) / seconds
        claims = (fleet_after["claims"] - fleet_before["claims"]) / seconds
        due = (workers / fleet_after["heartbeat_s"], workers / block_seconds)
        reading.update(renewals_s=round(renewals, 1), waits_s=round(waits, 1), claims_s=round(claims, 1))
        reading["cadence"] = round(min(renewals / due[0], waits / due[1]), 3)
    # what a worker costs at the real worker's cadence (the Redis work is per call)
    reading["us_per_worker_s_full"] = round(reading["us_per_worker_s"] / (reading["cadence"] or 1.0), 1)
    return reading


def busy_reading(
    before: dict[str, Any],
    after: dict[str, Any],
    seconds: float,
    tasks: int,
    idle_cpu: float,
    fleet: dict[str, Any] | None,
) -> dict[str, Any]:
    """``tasks`` no-op tasks submitted, claimed, completed and retrieved in ``seconds``.
    Redis CPU per task in all, and net of what the idle workers' heartbeats and waits cost
    over the same time (``idle_cpu``: the idle reading's rate).  From the fleets' counters
    (None for real workers): claim latency and the waits woken with nothing to take."""
    rate = cpu_rate(before, after, seconds)
    spent = rate * seconds
    reading: dict[str, Any] = {
        "tasks": tasks,
        "seconds": round(seconds, 3),
        "tasks_s": round(tasks / seconds, 1),
        "redis_cpu_pct": round(100 * rate, 1),
        "us_per_task": round(1e6 * spent / tasks, 1),
        "net_us_per_task": round(1e6 * max(spent - idle_cpu * seconds, 0.0) / tasks, 1),
        "claim_p50_ms": None,
        "claim_p99_ms": None,
        "woken_empty_per_task": None,
    }
    if fleet is not None:
        ordered = sorted(fleet["latencies"])
        reading["claim_p50_ms"] = round(1e3 * percentile(ordered, 0.50), 2)
        reading["claim_p99_ms"] = round(1e3 * percentile(ordered, 0.99), 2)
        reading["claims_with_tasks"] = len(ordered)
        reading["woken_empty_per_task"] = round(fleet["woken_empty"] / tasks, 3)
        reading["workers_with_tasks"] = fleet["workers_with_tasks"]
        reading["errors"] = fleet["errors"]
    return reading


def memory_reading(before: dict[str, Any], after: dict[str, Any], workers: int, connections: int) -> dict[str, Any]:
    """Bytes of Redis per worker: all it adds but its connections (used_memory less the
    clients' buffers: noisy below a few hundred workers) and its connections
    (``mem_clients_normal``)."""
    clients = int(after["mem_clients_normal"]) - int(before["mem_clients_normal"])
    used = int(after["used_memory"]) - int(before["used_memory"])
    return {
        "used_bytes": round((used - clients) / workers),
        "connections_bytes": round(clients / workers),
        "bytes_per_connection": round(clients / max(connections, 1)),
    }


COLUMNS = [  # row key, header, format
    ("label", "workers", "str"),
    ("connections", "conns", "int"),
    ("conns_per_worker", "conn/w", "float"),
    ("idle_cpu_pct", "idle CPU%", "float"),
    ("idle_us_per_worker_s", "us/s/worker", "float"),
    ("idle_us_full", "at cadence 1", "float"),
    ("idle_commands_s", "idle cmd/s", "int"),
    ("cadence", "cadence", "float"),
    ("record_bytes", "B/record", "int"),
    ("connections_bytes", "B/conns", "int"),
    ("tasks_s", "tasks/s", "int"),
    ("us_per_task", "us/task", "float"),
    ("net_us_per_task", "net us/task", "float"),
    ("claim_p50_ms", "claim p50 ms", "float"),
    ("claim_p99_ms", "claim p99 ms", "float"),
    ("woken_empty_per_task", "empty wakes/task", "float"),
]


def row(
    label: str, workers: int, connections: int, idle: dict[str, Any], memory: dict[str, Any], busy: dict[str, Any]
) -> dict[str, Any]:
    """One line of the table from one worker count's readings."""
    return {
        "label": label,
        "workers": workers,
        "connections": connections,
        "conns_per_worker": connections / workers,
        "idle_cpu_pct": idle["redis_cpu_pct"],
        "idle_us_per_worker_s": idle["us_per_worker_s"],
        "idle_us_full": idle["us_per_worker_s_full"],
        "idle_commands_s": idle["commands_s"],
        "cadence": idle["cadence"],
        "record_bytes": memory["record_bytes"],
        "connections_bytes": memory["connections_bytes"],
        **{key: busy.get(key) for key in ("tasks_s", "us_per_task", "net_us_per_task", "claim_p50_ms")},
        **{key: busy.get(key) for key in ("claim_p99_ms", "woken_empty_per_task")},
    }


def _cell(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "str":
        return str(value)
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Plain text, one row per worker count, columns aligned right."""
    cells = [[header for _, header, _ in COLUMNS]] + [
        [_cell(r.get(key), kind) for key, _, kind in COLUMNS] for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells)


def per_core(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What one Redis core can carry, from the largest simulated worker count measured:
    idle workers (1e6 us/s over one idle worker's us/s at the real cadence) and tasks (1e6 over the net us per
    task)."""
    measured = [r for r in rows if r.get("idle_us_full") and r.get("cadence")]
    if not measured:
        return {}
    last = max(measured, key=lambda r: r["workers"])
    out: dict[str, Any] = {"from_workers": last["workers"]}
    out["idle_workers_per_core"] = round(1e6 / last["idle_us_full"])
    if last.get("net_us_per_task"):
        out["tasks_s_per_core"] = round(1e6 / last["net_us_per_task"])
    return out
