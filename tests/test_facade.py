"""``import wq_redis as wq``: the same public names as always, loaded on first use, so a
process that needs only a lower layer (the worker's child running tasks) stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import wq_redis as wq

PUBLIC = {
    "WorkQueue", "Task", "PythonTask", "PythonTaskNoResult", "Resources", "Stats", "Result", "TaskState",
    "result_str", "RedisUnavailable", "EnvelopeError", "Executor", "TaskFuture", "TaskFailed", "RemoteTraceback",
    "FileTooLarge", "Factory", "DurabilityUnavailable", "__version__",
}  # fmt: skip
# RESULT_* (14), TASK_* (7), file types and flags (4), WAITFORTASK, DEFAULT_PORT, ALLOCATION_MODE_* (9)
WORK_QUEUE_NAMES = 36


def _modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_the_public_names_are_those_of_every_release():
    work_queue = {name for name in wq.__all__ if name.startswith("WORK_QUEUE_")}
    assert set(wq.__all__) - work_queue == PUBLIC
    assert len(work_queue) == WORK_QUEUE_NAMES
    for name in wq.__all__:
        assert getattr(wq, name) is not None, name
    assert set(wq.__all__) <= set(dir(wq))


def test_work_queue_constants_keep_their_values():
    assert wq.WORK_QUEUE_RESULT_SUCCESS == 0 and wq.WORK_QUEUE_RESULT_UNKNOWN == wq.Result.UNKNOWN
    assert wq.WORK_QUEUE_TASK_RUNNING == wq.TaskState.RUNNING
    assert wq.WORK_QUEUE_WAITFORTASK == -1


def test_star_import_gives_the_public_names():
    namespace: dict[str, object] = {}
    exec("from wq_redis import *", namespace)
    assert {"WorkQueue", "PythonTask", "WORK_QUEUE_RESULT_SUCCESS"} <= set(namespace)


def test_an_unknown_name_raises_attribute_error():
    try:
        wq.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("wq.NoSuchThing did not raise")


def test_importing_the_package_loads_no_layer_and_no_dependency():
    loaded = _modules_after("import wq_redis")
    ours = [m for m in loaded if m.startswith("wq_redis")]
    assert ours == ["wq_redis", "wq_redis.protocol", "wq_redis.protocol.version"]
    assert not {"redis", "cloudpickle", "click", "rich", "prometheus_client", "psutil"} & set(loaded)


def test_the_queue_class_is_loaded_on_first_use_with_the_client_layer_only_below_it():
    loaded = _modules_after("import wq_redis as wq\nwq.WorkQueue")
    assert "wq_redis.client.queue" in loaded and "wq_redis.embedded.queue" in loaded
    assert not [m for m in loaded if m.startswith(("wq_redis.ops", "wq_redis.worker"))]
    assert not {"click", "rich", "prometheus_client"} & set(loaded)


def test_every_work_queue_constant_of_the_client_is_exported():
    from wq_redis.client import codes

    defined = {name for name in vars(codes) if name.startswith("WORK_QUEUE_")}
    assert defined == {name for name in wq.__all__ if name.startswith("WORK_QUEUE_")}
