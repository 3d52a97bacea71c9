"""``wq.Factory``: Work Queue's ``Factory``, on Redis: local workers or batch-system jobs.

Work Queue programs start their workers with a factory::

    import wq_redis as wq
    q = wq.WorkQueue("proj")
    factory = wq.Factory("local", manager=q)
    factory.min_workers, factory.max_workers = 1, 4
    factory.cores, factory.memory = 2, 1000
    with factory:                      # starts workers as tasks wait; leaving stops them
        ...submit and wait...

A background thread reads the queue's demand once a cycle (one read-only script call)
and starts ``wq-redis worker`` processes on this machine up to the need, by Work Queue's
rule (factory_demand.py).  It never kills a busy worker: surplus workers exit by their
idle ``timeout``.  The workers get the Redis URL in their environment, never on their
command line.

``Factory("slurm" | "condor" | "sge" | "pbs" | "lsf", ...)`` submits the workers as jobs
through the batch system's own commands instead (wq_redis.batch: sbatch/squeue/scancel,
condor_submit/condor_q/condor_rm, qsub/qstat/qdel, bsub/bjobs/bkill), with the same rule,
tracks its jobs each cycle, and at ``stop()`` cancels the pending ones and removes the
running ones (their workers finish or hand back their tasks).  ``wq-redis factory`` (the
command line) runs this very class.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import logging
import os
import shlex
import warnings
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from .factory_options import (
    COMMAND_LINE_OPTIONS,
    LIVE_OPTIONS,
    UnsetOption,
    checked_value,
    ignored_options,
    where_is_the_queue,
)
from .factory_pools import BatchPool, LocalPool, WorkerPool
from .factory_thread import BATCH_CYCLE_SECONDS, CYCLE_SECONDS, FactoryThread, WorkerSpec
from .server import acquire_embedded, release_embedded

log = logging.getLogger("wq_redis.embedded.factory")
_numbers = itertools.count()  # worker names: factory<N>-<n>-<pid>, unique in this process


class Factory:
    """Work Queue's ``Factory(batch_type="local", manager=None, manager_host_port=None,
    manager_name=None, factory_binary=None, worker_binary=None, log_file=os.devnull)``.

    Where the workers go (one of the three is needed):

    * ``manager=q``: ``q``'s Redis and queue (and its signing secret, if it has one);
    * ``manager_name="proj"``: the queue named ``proj`` on the Redis of ``WQ_REDIS_URL``
      (then ``REDIS_URL``; with neither, this process's embedded Redis, as ``WorkQueue``);
    * ``manager_host_port="HOST:PORT"``: the Redis at HOST:PORT, queue ``manager_name`` (or
      ``"default"``).  Its password, database and TLS come from ``WQ_REDIS_URL`` when that
      names the same host and port.  Port 0 (what ``WorkQueue.port`` answers) is this
      process's Redis, as for ``manager_name``.

    Attributes are ``work_queue_factory``'s options with ``_`` for ``-``: ``min_workers``
    (default 5), ``max_workers`` (100), ``workers_per_cycle`` (5), ``tasks_per_worker``
    (default: a worker's cores), ``timeout`` (idle seconds before a worker exits, 300),
    ``factory_timeout`` (stop the workers when Redis is unreachable this long), ``cores``,
    ``memory``, ``disk`` (MB), ``gpus`` (declared: a worker offers them whatever it
    detects), ``scratch_dir`` (where the workers' directories go), ``extra_options``
    (further ``wq-redis worker`` options) and ``env`` (``"VAR=VALUE"``, a list of them or a
    dict).  Reading one never set raises ``KeyError`` (an ``AttributeError`` too), as Work
    Queue does.  While running, those of Work Queue's configuration file (``min_workers``,
    ``max_workers``, ``cores``, ``timeout``, ...) may change and apply at once to the
    workers started afterwards; the others raise ``AttributeError``.  Batch-system options
    (``condor_requirements``, ``batch_options``, ``k8s_image``...) mean nothing for local
    workers, as in Work Queue; those that would change local workers but cannot here
    (``wrapper``, ``python_env``, ``password``, ``capacity``...) warn at ``start()``.

    Batch types (``slurm``, ``condor``, ``sge``/``uge``, ``pbs``/``torque``, ``lsf``) take
    ``batch_options`` (further submit options; for condor, submit-file lines),
    ``python_env`` (a shell line run before the worker, e.g. ``source venv/bin/activate``;
    the worker is then that environment's ``python3``), ``scratch_dir`` (where the job
    scripts go; default a temporary directory), and ``tags`` (the workers take only tasks
    of these tags, and the factory counts only their demand).
    """

    def __init__(
        self,
        batch_type: str = "local",
        manager: Any = None,
        manager_host_port: str | None = None,
        manager_name: str | None = None,
        factory_binary: str | None = None,
        worker_binary: str | None = None,
        log_file: str = os.devnull,
    ) -> None:
        self._opts: dict[str, Any] = {}
        self._thread: FactoryThread | None = None
        self._embedded = False
        self._exit_hook: Any = None
        self._log_file = log_file
        self._log_handler: logging.Handler | None = None
        self._log_level = logging.NOTSET
        self._cycle_seconds: float | None = None  # wq-redis factory --cycle-seconds
        if manager is None and not manager_host_port and not manager_name:
            raise ValueError("Either manager, manager_host_port, or manager_name or manager should be specified.")
        self._manager = manager
        self._host_port = manager_host_port
        if manager_host_port is not None:
            where_is_the_queue(None, manager_host_port, None)  # refuses what is not HOST:PORT now
        self.batch_type = batch_type
        if manager_name:
            self.manager_name = manager_name
        self.scratch_dir = None
        if factory_binary is not None or worker_binary is not None:
            warnings.warn(
                "Factory(factory_binary=, worker_binary=) are ignored: local workers are `python -m wq_redis worker`",
                stacklevel=2,
            )

    # -- attributes: work_queue_factory's options -------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in COMMAND_LINE_OPTIONS:
            raise AttributeError(f"{name} is not a supported option")
        try:
            return self._opts[name]
        except KeyError:
            raise UnsetOption(f"{name} is a valid factory attribute, but has not been set yet.") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        if name not in COMMAND_LINE_OPTIONS:
            raise AttributeError(f"{name} is not a supported option")
        value = checked_value(name, value)
        thread = self._thread
        if thread is None or not thread.running():
            self._opts[name] = value
            return
        if name not in LIVE_OPTIONS or name == "manager_name":
            raise AttributeError(f"{name} cannot be changed once the factory is running.")
        self._opts[name] = value
        thread.update(self._spec())

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Factory:
        """Start the background thread and its first workers (at once: ``min_workers``, and
        more if tasks wait); a running factory takes its attributes again.  Raises
        ``RedisUnavailable`` when the queue's Redis cannot be reached."""
        if self._thread is not None:
            if self._thread.running():
                self._thread.update(self._spec())
                return self
            self.stop()  # ended by its factory_timeout: start afresh
        local = self.batch_type == "local"
        ignored = ignored_options(self._opts, local)
        if ignored:
            warnings.warn(
                f"Factory options without effect on {self.batch_type} wq-redis workers: {ignored}", stacklevel=2
            )
        url, queue, env = where_is_the_queue(self._manager, self._host_port, self._opts.get("manager_name"))
        if url is None:
            url = acquire_embedded()
            self._embedded = True
        self._open_log()
        try:
            spec = self._spec()
            pool: WorkerPool
            if local:
                pool = LocalPool(url, queue, {**env, **spec.env}, prefix=f"factory{next(_numbers)}-")
            else:
                if self._embedded:
                    log.warning(
                        "batch workers of this factory use the embedded Redis at %s: other hosts may not reach it", url
                    )
                options = batch_options(
                    self.batch_type, self._opts.get("batch_options"), self._opts.get("condor_requirements")
                )
                pool = BatchPool(self.batch_type, url, queue, {**env, **spec.env}, spec.scratch_dir, options)
            self._thread = FactoryThread(
                url,
                queue,
                spec,
                pool,
                tasks_left=self._tasks_left,
                cycle_seconds=self._cycle_seconds or (CYCLE_SECONDS if local else BATCH_CYCLE_SECONDS),
            )
            self._thread.start()
        except BaseException:
            self._release()
            raise
        self._exit_hook = functools.partial(_stop_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        return self

    def stop(self) -> None:
        """Stop every worker the factory started (SIGTERM: they finish their running tasks,
        as long as they can within a few seconds, then hand the rest back to the queue)."""
        if self._thread is None:
            raise RuntimeError("Factory not yet started")
        thread, self._thread = self._thread, None
        try:
            thread.stop()
        finally:
            self._release()

    def __enter__(self) -> Factory:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # never started, or half built: nothing of ours runs
            pass

    @property
    def running(self) -> bool:
        """Whether the factory runs (False once stopped, or ended by its factory_timeout)."""
        return self._thread is not None and self._thread.running()

    @property
    def workers_started(self) -> int:
        """Worker processes of this factory alive now (not in Work Queue: for tests and logs)."""
        return self._thread.alive() if self._thread is not None else 0

    # -- helpers ---------------------------------------------------------------------------
    def _tasks_left(self) -> int:
        """What the manager object announced with ``specify_num_tasks_left`` (client/compat.py)."""
        return int(getattr(self._manager, "_num_tasks_left", 0) or 0)

    def _spec(self) -> WorkerSpec:
        opts = self._opts
        extra = _extra_options(opts.get("extra_options"))
        return WorkerSpec.from_options(opts, extra, _env(opts.get("env")), local=self.batch_type == "local")

    def _open_log(self) -> None:
        """Work Queue's ``log_file``: the factory's lines (each cycle's, with ``debug`` set)."""
        if self._log_file and self._log_file != os.devnull:
            handler = logging.FileHandler(self._log_file)
            handler.setLevel(logging.DEBUG if self._opts.get("debug") else logging.INFO)
            log.addHandler(handler)
            self._log_handler, self._log_level = handler, log.level
            if log.getEffectiveLevel() > handler.level:
                log.setLevel(handler.level)

    def _release(self) -> None:
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            log.setLevel(self._log_level)
            self._log_handler.close()
            self._log_handler = None
        if self._embedded:
            self._embedded = False
            release_embedded()


def _extra_options(value: Any) -> list[str]:
    """``extra_options`` as worker arguments; Work Queue's ``--parent-death`` (which its
    binding adds for local workers) is dropped: ours always die with this process."""
    if not value:
        return []
    words = shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
    return [w for w in words if w != "--parent-death"]


def batch_options(batch_type: str, value: Any, condor_requirements: Any = None) -> list[str]:
    """``batch_options`` as submit-command words (split as a shell would), or for condor as
    submit-file lines (one per line; a literal ``\\n`` separates them too, as in Work
    Queue), with ``condor_requirements`` as its ``requirements`` line."""
    if batch_type == "condor":
        text = value if isinstance(value, str) else "\n".join(str(v) for v in value or ())
        lines = [line.strip() for line in text.replace("\\n", "\n").splitlines() if line.strip()]
        if condor_requirements:
            lines.append(f"requirements = ({condor_requirements})")
        return lines
    if not value:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _env(value: Any) -> dict[str, str]:
    """``env`` (``"VAR=VALUE"``, several of them, or a dict) as environment variables."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    items: Iterable[Any] = [value] if isinstance(value, str) else value
    out = {}
    for item in items:
        name, sep, text = str(item).partition("=")
        if not sep or not name:
            raise ValueError(f"Factory env entries are VAR=VALUE, got {item!r}")
        out[name] = text
    return out


def _stop_at_exit(factory_ref: weakref.ref[Factory]) -> None:
    """A factory the program left running is stopped at exit, before the embedded Redis
    (registered earlier, so stopped later) goes: its workers leave cleanly."""
    factory = factory_ref()
    if factory is not None and factory._thread is not None:
        try:
            factory.stop()
        except Exception as exc:  # at exit there is no caller left to raise to
            log.warning("stopping a factory at exit: %s", exc)
