"""``wq-redis status``: queues, workers, tasks and categories of a Redis, in the manner of
``work_queue_status`` and ``rq info``.

It only reads (protocol/report.py gathers, this module renders): queues are found by SCAN
unless ``--queue`` names them; listings are capped by ``--limit``.  Text output is rich
tables; ``--json`` prints one JSON document for scripts; ``--watch`` redraws the tables
every ``--interval`` seconds.

    wq-redis status                 queues: waiting (by resource class and tag), running, done, failed
    wq-redis status -W              workers: host, resources total and in use, tasks, last heartbeat
    wq-redis status -T -M demo      tasks of a queue: id, state, tag, category, worker, age
    wq-redis status -A              categories: declared resources, tasks waiting and running
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from .params import REDIS_URL_ENV, tls_options

MINUTE, HOUR = 60, 3600  # ages show in seconds up to two minutes, in minutes up to two hours
PIPED_WIDTH = 200  # columns of the tables when stdout is not a terminal (rich would assume 80)
LIMIT = 100  # --limit's default: gather's (tests/test_status.py keeps them equal)


# -- rendering ---------------------------------------------------------------------------
def _resources(values: dict[str, int]) -> str:
    return " ".join(
        f"{values.get(name, 0)}{unit}" for name, unit in (("cores", "c"), ("memory", "M"), ("disk", "D"), ("gpus", "g"))
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 2 * MINUTE:
        return f"{seconds:.1f}s"
    if seconds < 2 * HOUR:
        return f"{seconds / MINUTE:.0f}m"
    return f"{seconds / HOUR:.0f}h"


def _table(title: str, *runs: tuple[str, ...]) -> Any:
    """A rich table whose column runs alternate left-aligned (text) and right-aligned (numbers)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for index, run in enumerate(runs):
        for column in run:
            table.add_column(column, justify="left" if index % 2 == 0 else "right")
    return table


def render(report: dict[str, Any], workers: bool, tasks: bool, categories: bool) -> Any:
    """The rich tables of a report (a Group, printable or usable in a Live display)."""
    from rich.console import Group

    parts: list[Any] = []
    queues = report["queues"]
    only_queues = not (workers or tasks or categories)
    if only_queues:
        table = _table(
            "queues", ("QUEUE",), ("WAITING", "RUNNING", "RESULTS", "DONE", "FAILED", "CANCELLED", "WORKERS")
        )
        for q in queues:
            table.add_row(
                q["name"],
                *(str(q[k]) for k in ("waiting", "running", "with_results", "done", "failed", "cancelled", "workers")),
            )
        parts.append(table)
        waiting = _table("waiting by resource class and tag", ("QUEUE", "CLASS", "TAG"), ("TASKS",))
        for q in queues:
            for row in q["waiting_by_class"]:
                waiting.add_row(q["name"], row["class"], row["tag"] or "-", str(row["tasks"]))
        if waiting.row_count:
            parts.append(waiting)
        sharded = _table(
            "partitions of sharded queues", ("QUEUE", "PARTITION", "KEYS"), ("WAITING", "RUNNING", "RESULTS")
        )
        for q in queues:
            for part in q.get("partitions", ()):
                sharded.add_row(
                    q["name"],
                    str(part["partition"]),
                    part["keys"],
                    *(str(part[k]) for k in ("waiting", "running", "with_results")),
                )
        if sharded.row_count:
            parts.append(sharded)
    if workers:
        table = _table(
            "workers",
            ("QUEUE", "WORKER", "HOST", "RESOURCES", "IN USE"),
            ("RUNNING", "DONE"),
            ("TAGS",),
            ("HEARTBEAT",),
        )
        for q in queues:
            for w in q["worker_list"]:
                table.add_row(
                    q["name"],
                    w["name"],
                    w["host"],
                    _resources(w["resources"]),
                    _resources(w["in_use"]),
                    str(w["tasks_running"]),
                    str(w["tasks_done"]),
                    ",".join(w["tags"]) or "(all)",
                    _age(w["last_heartbeat_s"]) + " ago",
                )
        parts.append(table)
    if tasks:
        table = _table(
            "tasks", ("QUEUE",), ("ID",), ("STATE", "TAG", "CATEGORY", "CLASS", "WORKER"), ("ATTEMPTS", "AGE")
        )
        for q in queues:
            for t in q["tasks"]:
                name = str(t["id"]) if t["tasks"] == 1 else f"{t['id']} (pack of {t['tasks']})"
                table.add_row(
                    q["name"],
                    name,
                    t["state"],
                    t["tag"] or "-",
                    t["category"],
                    t["class"],
                    t["worker"] or "-",
                    str(t["attempts"]),
                    _age(t["age_s"]),
                )
        parts.append(table)
    if categories:
        table = _table("categories", ("QUEUE", "CATEGORY", "MAX RESOURCES"), ("WAITING", "RUNNING", "RESULTS"))
        for q in queues:
            for cat in q["categories"]:
                declared = cat["max_resources"]
                table.add_row(
                    q["name"],
                    cat["name"],
                    _resources(declared) if declared else "-",
                    str(cat["waiting"]),
                    str(cat["running"]),
                    str(cat["with_results"]),
                )
        parts.append(table)
    if not queues:
        parts.append("no queues on this Redis")
    return Group(*parts)


# -- the command -------------------------------------------------------------------------
@click.command("status")
@click.option(
    "--redis-url",
    "--redis",
    envvar=REDIS_URL_ENV,
    required=True,
    help="Redis URL (env WQ_REDIS_URL, then REDIS_URL).",
)
@click.option("--queue", "-M", "queues", multiple=True, help="Queue to show (repeatable; default: every queue found).")
@click.option("--workers", "-W", is_flag=True, help="List workers: host, resources, tasks, last heartbeat.")
@click.option("--tasks", "-T", is_flag=True, help="List tasks: id, state, tag, category, worker, age.")
@click.option("--categories", "-A", is_flag=True, help="List categories: declared resources, tasks.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=LIMIT,
    show_default=True,
    help="Most tasks listed per queue (and per ready queue scanned).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.option("--watch", is_flag=True, help="Redraw the tables until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between redraws with --watch.",
)
@tls_options
def status_command(
    redis_url: str,
    queues: tuple[str, ...],
    workers: bool,
    tasks: bool,
    categories: bool,
    limit: int,
    as_json: bool,
    watch: bool,
    interval: float,
) -> None:
    """Show the queues, workers, tasks and categories on a Redis (reads only)."""
    from rich.console import Console

    from ..protocol.connection import RedisUnavailable, open_client
    from ..protocol.report import QueueUnreadable, gather  # not at import: cli.py loads this for every command

    try:
        client = open_client(redis_url)
    except (RedisUnavailable, ValueError) as exc:  # ValueError: a URL that does not parse
        raise click.ClickException(str(exc)) from None

    def snapshot() -> dict[str, Any]:
        try:
            return gather(client, queues, workers, tasks, categories, limit)
        except QueueUnreadable as exc:
            raise click.ClickException(str(exc)) from None

    if as_json:
        click.echo(json.dumps(snapshot(), indent=2, sort_keys=True))
        return
    console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
    if not watch:
        console.print(render(snapshot(), workers, tasks, categories))
        return
    from rich.live import Live

    try:
        with Live(render(snapshot(), workers, tasks, categories), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(snapshot(), workers, tasks, categories), refresh=True)
    except KeyboardInterrupt:
        pass
