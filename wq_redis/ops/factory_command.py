"""``wq-redis factory``: Work Queue's ``work_queue_factory`` on Redis.

It runs ``wq.Factory`` (embedded/factory.py) in the foreground: the same thread, rule and
batch layer as the Python face, with ``work_queue_factory``'s option names where they fit
(``-T``, ``-M``, ``-w``, ``-W``, ``--workers-per-cycle``, ``-t``, ``--cores``...), each with
an environment-variable fallback.  SIGTERM or Ctrl-C ends it: pending worker jobs are
cancelled, running ones removed (their workers finish or hand back their tasks), and the
job scripts deleted.
"""

from __future__ import annotations

import os
import signal
import threading

import click

from .params import log_level_option, queue_options, resource_options, setup_logging, tls_options

BATCH_TYPES = ["local", "slurm", "condor", "sge", "uge", "pbs", "torque", "lsf"]
# How often the foreground loop looks whether the factory ended by itself (factory_timeout).
POLL_SECONDS = 0.5


@click.command("factory")
@click.option(
    "--batch-type",
    "-T",
    envvar="WQ_FACTORY_BATCH_TYPE",
    required=True,
    type=click.Choice(BATCH_TYPES),
    help="Where workers run: local processes or jobs of a batch system (env WQ_FACTORY_BATCH_TYPE).",
)
@queue_options(
    redis_url="Redis URL, e.g. redis://:PASSWORD@HOST:6379/0 (env WQ_REDIS_URL, then REDIS_URL); "
    "the workers get it in their environment, never on a command line.",
    queue="Queue to serve (env WQ_QUEUE).",
)
@click.option(
    "--min-workers",
    "-w",
    envvar="WQ_FACTORY_MIN_WORKERS",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Workers kept even with no task (env WQ_FACTORY_MIN_WORKERS).",
)
@click.option(
    "--max-workers",
    "-W",
    envvar="WQ_FACTORY_MAX_WORKERS",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Most workers of this factory at once (env WQ_FACTORY_MAX_WORKERS).",
)
@click.option(
    "--workers-per-cycle",
    envvar="WQ_FACTORY_WORKERS_PER_CYCLE",
    type=int,
    default=5,
    show_default=True,
    help="At most this many of the factory's workers on their way at once (0: no cap).",
)
@click.option(
    "--tasks-per-worker",
    envvar="WQ_FACTORY_TASKS_PER_WORKER",
    type=int,
    help="Tasks one worker runs at once, for sizing (default: its cores).",
)
@click.option(
    "--timeout",
    "-t",
    envvar="WQ_IDLE_TIMEOUT",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    help="Workers exit after this many idle seconds (env WQ_IDLE_TIMEOUT): surplus workers leave so.",
)
@resource_options(
    cores="Cores per worker (env WQ_CORES).",
    memory="Memory per worker in MB (env WQ_MEMORY).",
    disk="Disk per worker in MB (env WQ_DISK).",
    gpus="GPUs per worker (env WQ_GPUS).",
    tags="Workers take only tasks of these comma-separated tags (env WQ_TAGS).",
)
@click.option(
    "--batch-options",
    "-B",
    envvar="WQ_FACTORY_BATCH_OPTIONS",
    help="Further submit options (condor: submit-file lines) (env WQ_FACTORY_BATCH_OPTIONS).",
)
@click.option(
    "--condor-requirements", envvar="WQ_FACTORY_CONDOR_REQUIREMENTS", help="HTCondor requirements of the worker jobs."
)
@click.option(
    "--python-env",
    envvar="WQ_FACTORY_PYTHON_ENV",
    help="Shell line that activates the workers' environment, e.g. 'source /path/venv/bin/activate' "
    "(env WQ_FACTORY_PYTHON_ENV; default: this Python, on a shared file system).",
)
@click.option(
    "--factory-timeout",
    envvar="WQ_FACTORY_TIMEOUT",
    type=click.IntRange(min=0),
    default=0,
    help="Exit when Redis has been unreachable this many seconds (0: never).",
)
@click.option(
    "--scratch-dir",
    "-S",
    envvar="WQ_FACTORY_SCRATCH_DIR",
    type=click.Path(file_okay=False),
    help="Where the job scripts go (default: a temporary directory, removed at exit).",
)
@click.option("--extra-options", "-E", envvar="WQ_FACTORY_EXTRA_OPTIONS", help="Further `wq-redis worker` options.")
@click.option("--env", "env", multiple=True, help="VAR=VALUE in the workers' environment (repeatable).")
@click.option(
    "--cycle-seconds",
    envvar="WQ_FACTORY_CYCLE_SECONDS",
    type=click.FloatRange(min=0.1),
    help="Seconds between looks at the queue and the jobs (default: 2 local, 10 batch).",
)
@log_level_option
@tls_options
def factory_command(
    batch_type: str,
    redis_url: str,
    queue: str,
    min_workers: int,
    max_workers: int,
    workers_per_cycle: int,
    tasks_per_worker: int | None,
    timeout: int,
    cores: int | None,
    memory: int | None,
    disk: int | None,
    gpus: int | None,
    tags: str,
    batch_options: str | None,
    condor_requirements: str | None,
    python_env: str | None,
    factory_timeout: int,
    scratch_dir: str | None,
    extra_options: str | None,
    env: tuple[str, ...],
    cycle_seconds: float | None,
    log_level: str,
) -> None:
    """Start workers for QUEUE as its tasks need them, as local processes or batch jobs."""
    from ..embedded.factory import Factory
    from ..protocol.connection import RedisUnavailable

    setup_logging(log_level)
    os.environ["WQ_REDIS_URL"] = redis_url  # where Factory(manager_name=...) looks; our workers' too
    factory = Factory(batch_type, manager_name=queue)
    settings = {
        "min_workers": min_workers,
        "max_workers": max_workers,
        "workers_per_cycle": workers_per_cycle,
        "tasks_per_worker": tasks_per_worker,
        "timeout": timeout,
        "cores": cores,
        "memory": memory,
        "disk": disk,
        "gpus": gpus,
        "tags": tags or None,
        "batch_options": batch_options,
        "condor_requirements": condor_requirements,
        "python_env": python_env,
        "factory_timeout": factory_timeout,
        "scratch_dir": scratch_dir,
        "extra_options": extra_options,
        "env": list(env) or None,
    }
    try:
        for name, value in settings.items():
            if value is not None:
                setattr(factory, name, value)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    factory._cycle_seconds = cycle_seconds
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        factory.start()
    except (RedisUnavailable, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        while not stop.wait(POLL_SECONDS) and factory.running:
            pass
    finally:
        factory.stop()
