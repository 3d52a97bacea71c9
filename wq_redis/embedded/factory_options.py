"""``wq.Factory``'s attributes (``work_queue_factory``'s options, ``_`` for ``-``) and where
its workers go (a queue object, a queue name, or a ``HOST:PORT``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..batch import BATCH_TYPES
from ..protocol.connection import resolve_url
from ..protocol.tls import tls_url

# every option Work Queue's Python Factory takes (ndcctools.work_queue.Factory)
COMMAND_LINE_OPTIONS = frozenset(
    {
        "amazon_config",
        "autosize",
        "batch_options",
        "batch_type",
        "capacity",
        "catalog",
        "condor_requirements",
        "config_file",
        "cores",
        "debug",
        "debug_file",
        "debug_file_size",
        "disk",
        "env",
        "extra_options",
        "factory_timeout",
        "foremen_name",
        "gpus",
        "k8s_image",
        "k8s_worker_image",
        "max_workers",
        "manager_name",
        "memory",
        "mesos_master",
        "mesos_path",
        "mesos_preload",
        "min_workers",
        "password",
        "python_env",
        "python_package",
        "run_factory_as_manager",
        "runos",
        "scratch_dir",
        "ssl",
        "tags",  # not in Work Queue: the workers' --tags (wq-redis factory --tags)
        "tasks_per_worker",
        "timeout",
        "worker_binary",
        "workers_per_cycle",
        "wrapper",
        "wrapper_input",
    }
)
# those of its configuration file: they may change while the factory runs (not gpus: as in Work Queue)
LIVE_OPTIONS = frozenset(
    {
        "autosize",
        "capacity",
        "cores",
        "disk",
        "factory_timeout",
        "foremen_name",
        "manager_name",
        "max_workers",
        "memory",
        "min_workers",
        "tags",
        "tasks_per_worker",
        "timeout",
        "workers_per_cycle",
        "condor_requirements",
    }
)
# They would change what local workers are or do under Work Queue, and cannot here.
WITHOUT_EFFECT = frozenset(
    {
        "capacity",  # workers pull tasks: a manager has no dispatch rate to cap the factory at
        "catalog",  # workers find queues through Redis
        "foremen_name",  # no foremen
        "password",  # Redis' password is in the URL; task signing is WQ_REDIS_SECRET
        "python_env",
        "python_package",
        "run_factory_as_manager",
        "runos",
        "worker_binary",
        "wrapper",
        "wrapper_input",
    }
)
# What batch workers take besides (python_env: a shell line that activates their environment).
BATCH_ONLY = frozenset({"python_env"})
# Work Queue's other names for batch types we have
BATCH_ALIASES = {"torque": "pbs", "uge": "sge"}
# The rest mean nothing for local workers in Work Queue either (batch-system options,
# the factory's own debug output and config file; TLS, which the Redis URL decides).
INTEGER_OPTIONS = {  # name -> the lowest value it takes
    "min_workers": 0,
    "max_workers": 1,
    "workers_per_cycle": None,  # 0 or less: no cap
    "tasks_per_worker": None,  # less than 1: a worker's cores
    "timeout": 0,
    "factory_timeout": 0,
    "cores": None,  # negative (Work Queue's -1): not set, as memory, disk and gpus
    "memory": None,
    "disk": None,
    "gpus": None,
}
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class UnsetOption(KeyError, AttributeError):
    """A factory option read before it was set: Work Queue raises ``KeyError``; being an
    ``AttributeError`` too keeps ``hasattr`` and ``getattr(factory, name, default)`` working."""


def checked_value(name: str, value: Any) -> Any:
    """``value`` for option ``name``, or ValueError when Work Queue's factory would refuse it."""
    if name == "batch_type":
        value = BATCH_ALIASES.get(value, value)
        if value not in BATCH_TYPES:
            raise batch_type_error(value)
    if name not in INTEGER_OPTIONS or value is None:
        return value
    try:
        number = int(value)
        if isinstance(value, bool) or (isinstance(value, float) and number != value):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"Factory option {name} must be an integer, got {value!r}") from None
    lowest = INTEGER_OPTIONS[name]
    if lowest is not None and number < lowest:
        raise ValueError(f"Factory option {name} must be at least {lowest}, got {number}")
    if name == "cores" and number == 0:
        raise ValueError("Factory option cores must be at least 1 (a worker needs a core), or -1 for not set")
    return number


def batch_type_error(batch_type: Any) -> NotImplementedError:
    return NotImplementedError(
        f"Factory batch type {batch_type!r} is not available: wq-redis's factory starts workers "
        f"as {', '.join(BATCH_TYPES)} (torque is pbs, uge is sge).  Elsewhere run "
        "`wq-redis worker` as the jobs yourself."
    )


def ignored_options(opts: dict[str, Any], local: bool = True) -> list[str]:
    """The options set that change nothing for this batch type's workers."""
    without = WITHOUT_EFFECT if local else WITHOUT_EFFECT - BATCH_ONLY
    return sorted(name for name in without if opts.get(name) not in (None, False, "", 0))


def where_is_the_queue(manager: Any, host_port: str | None, name: str | None) -> tuple[str | None, str, dict[str, str]]:
    """(Redis URL, queue name, environment the workers need) for the factory's manager.

    The URL is None for this process's embedded Redis (what ``WorkQueue`` with no URL uses)."""
    if manager is not None:
        if name and name != manager.name:
            raise ValueError(f"manager_name {name!r} differs from the manager's queue {manager.name!r}")
        env = manager.worker_environment()  # a signed queue's workers verify its tasks with its secret
        env.pop("WQ_REDIS_URL", None)  # the URL is returned apart
        return manager.redis_url, manager.name, env
    if host_port is None:
        return tls_url(resolve_url(None)), str(name), {}  # TLS files from WQ_TLS_* as WorkQueue's
    parts = [part for part in str(host_port).split(":") if part]
    if len(parts) != 2 or not parts[1].isdigit():
        raise ValueError("manager_host_port is not of the form HOST:PORT")
    host, port = parts[0], int(parts[1])
    queue = str(name) if name else "default"
    known = tls_url(resolve_url(None))
    if port == 0:  # WorkQueue.port: the queue has no port of its own, its Redis is this process's
        return known, queue, {}
    if known and _same_address(known, host, port):
        return known, queue, {}  # with that URL's password, database and TLS
    return f"redis://{host}:{port}", queue, {}


def _same_address(url: str, host: str, port: int) -> bool:
    try:
        parts = urlsplit(url)
        url_port = parts.port or 6379
    except ValueError:
        return False
    url_host = parts.hostname or ""
    same_host = url_host == host or (url_host in LOCAL_NAMES and host in LOCAL_NAMES)
    return parts.scheme in ("redis", "rediss") and same_host and url_port == port
