"""The printed table: one row per system, wq-to-peer ratios, and the goals of issue 4."""

from __future__ import annotations

import math
from typing import Any

from bench.systems import ORDER, PEERS

WORK_QUEUE_COMMANDS_PER_S = 518  # Work Queue's anchor for Task("/bin/true") (issue 4)

COLUMNS = [  # key, header, format, higher is better
    ("per_call", "per-call/s", "rate", True),
    ("batch", "batch/s", "rate", True),
    ("map", "map/s", "rate", True),
    ("p50_ms", "p50 ms", "ms", False),
    ("p99_ms", "p99 ms", "ms", False),
    ("mib", "1MiB/s", "rate", True),
    ("bytes_per_task", "B/queued", "bytes", False),
    ("cmd", "cmd/s", "rate", True),
    ("other_cpu_pct", "other CPU%", "pct", False),  # machine CPU busy with work not ours
]


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "rate":
        return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    if kind == "ms":
        return f"{value:.2f}"
    if kind == "bytes":
        return f"{value:,.0f}"
    if kind == "pct":
        return f"{value:.0f}"
    if kind == "ratio":
        return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"
    return str(value)


def render(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def ok(result: dict[str, Any] | None) -> bool:
    return bool(result) and "error" not in result  # type: ignore[operator]


def table(results: dict[str, dict[str, Any]]) -> str:
    names = [n for n in ORDER if n in results]
    headers = ["system"] + [h for _, h, _, _ in COLUMNS]
    rows = []
    for name in names:
        result = results[name]
        if not ok(result):
            rows.append([name] + ["error"] + [""] * (len(COLUMNS) - 1))
            continue
        rows.append([name] + [_fmt(result.get(key), kind) for key, _, kind, _ in COLUMNS])
    wq = results.get("wq")
    if ok(wq):
        for name in names:
            if name == "wq" or not ok(results[name]):
                continue
            peer = results[name]
            row = [f"wq / {name}"]
            for key, _, kind, _ in COLUMNS:
                if kind == "pct":
                    row.append("")
                    continue
                ours = wq.get(key)  # type: ignore[union-attr]
                theirs = peer.get(key, peer.get("batch") if key == "map" else None)
                row.append(_fmt(ours / theirs, "ratio") if ours is not None and theirs else "-")
            rows.append(row)
    note = (
        "ratios are wq's value over the peer's: above 1 is better for rates, below 1 for latency and memory; "
        "wq's map/s is set against the peer's batch/s;\n"
        "other CPU%: share of the machine's CPU busy with work that is not the benchmark's while it measured"
    )
    return render(headers, rows) + "\n" + note


def _fastest_peer(results: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> tuple[str, float] | None:
    best = None
    for name in PEERS:
        result = results.get(name)
        if not ok(result):
            continue
        value = max((result.get(k) or 0.0) for k in keys)  # type: ignore[union-attr]
        if best is None or value > best[1]:
            best = (name, value)
    return best


def goals(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(goal, measured, target, PASS/FAIL/n/a) for each goal of issue 4."""
    wq = results.get("wq")
    if not ok(wq):
        return [("wq ran", "error" if wq else "not run", "", "FAIL" if wq else "n/a")]
    assert wq is not None
    out: list[tuple[str, str, str, str]] = []

    def check(
        goal: str, value: float | None, target: float | None, at_least: bool, kind: str = "rate", strict: bool = False
    ) -> None:
        if value is None or target is None:
            out.append((goal, _fmt(value, kind), "-", "n/a"))
            return
        if at_least:
            passed, sign = value >= target, ">="
        else:
            passed, sign = (value < target, "<") if strict else (value <= target, "<=")
        out.append((goal, _fmt(value, kind), f"{sign} {_fmt(target, kind)}", "PASS" if passed else "FAIL"))

    fastest = _fastest_peer(results, ("per_call", "batch"))
    hand = results.get("handwritten") if ok(results.get("handwritten")) else None
    for key, label in (("batch", "submit_many"), ("map", "map")):
        check(
            f"batch ({label}) >= 10x fastest peer" + (f" ({fastest[0]})" if fastest else ""),
            wq.get(key),
            10 * fastest[1] if fastest else None,
            True,
        )
        check(
            f"batch ({label}) >= 30% of hand-written batched", wq.get(key), 0.3 * hand["batch"] if hand else None, True
        )
    per_call_peer = _fastest_peer(results, ("per_call",))
    check(
        "per-call submit >= 2x fastest peer" + (f" ({per_call_peer[0]})" if per_call_peer else ""),
        wq.get("per_call"),
        2 * per_call_peer[1] if per_call_peer else None,
        True,
    )
    check(
        "round trip p50 <= hand-written p50 + 0.3 ms",
        wq.get("p50_ms"),
        hand["p50_ms"] + 0.3 if hand else None,
        False,
        "ms",
    )
    check("round trip p99 < 2 ms", wq.get("p99_ms"), 2.0, False, "ms", strict=True)
    mib_peer = _fastest_peer(results, ("mib",))
    check(
        "1 MiB in+out >= best peer" + (f" ({mib_peer[0]})" if mib_peer else ""),
        wq.get("mib"),
        mib_peer[1] if mib_peer else None,
        True,
    )
    check("Redis bytes per queued no-op <= 200", wq.get("bytes_per_task"), 200, False, "bytes")
    check(
        f"command tasks >= 2x Work Queue's {WORK_QUEUE_COMMANDS_PER_S}/s",
        wq.get("cmd"),
        2 * WORK_QUEUE_COMMANDS_PER_S,
        True,
    )
    pubsub = wq.get("pubsub_calls")
    out.append(
        (
            "results never over pub/sub (PUBLISH/SUBSCRIBE calls)",
            str(pubsub),
            "== 0",
            "n/a" if pubsub is None else ("PASS" if pubsub == 0 else "FAIL"),
        )
    )
    return out


def goals_table(rows: list[tuple[str, str, str, str]]) -> str:
    return render(["goal", "wq", "target", "result"], [list(r) for r in rows])
