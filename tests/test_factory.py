"""``wq.Factory("local", ...)``: Work Queue's factory, starting local worker processes as the
queue's tasks need them (real Redis, real workers; every worker stopped by its pid)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from urllib.parse import urlsplit

import psutil
import pytest
from conftest import drain, wait_until
from helpers_tasks import my_sum

import wq_redis as wq
from wq_redis.embedded import factory as factory_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gone(pids: list[int]) -> bool:
    return all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in pids)


def _blocked_task(flag: str) -> wq.Task:
    """A one-core task that runs until ``flag`` exists: the queue's demand stays put meanwhile."""
    task = wq.Task(f"while [ ! -e {flag} ]; do sleep 0.05; done; echo ran")
    task.specify_cores(1)
    return task


def _next_cycles(factory: wq.Factory, count: int = 2) -> bool:
    """Wait until the factory has looked at the queue ``count`` more times."""
    target = factory._thread.cycles + count
    return wait_until(lambda: factory._thread.cycles >= target, timeout=30)


@pytest.fixture(autouse=True)
def quick_cycles(monkeypatch):
    """The factories of this module look at their queue every 0.5 s, not every 2 s: the
    tests that wait for the factory's next cycles (``_next_cycles``) wait that much less."""
    monkeypatch.setattr(factory_module, "CYCLE_SECONDS", 0.5)


@pytest.fixture
def stopped_at_end():
    """Factories a test leaves running are stopped, and their workers with them."""
    factories: list[wq.Factory] = []
    yield factories.append
    for factory in factories:
        if factory._thread is not None:
            pids = factory._thread.pids()
            factory.stop()
            assert _gone(pids)


def test_a_factory_starts_workers_as_tasks_wait_up_to_max_workers(queue, tmp_path, stopped_at_end):
    factory = wq.Factory("local", manager=queue)
    factory.min_workers, factory.max_workers, factory.cores, factory.timeout = 1, 3, 1, 60
    stopped_at_end(factory)
    with factory:
        assert wait_until(lambda: queue.stats.workers_connected == 1, timeout=30)  # min_workers, no task yet
        for _ in range(6):
            queue.submit(_blocked_task(str(tmp_path / "go")))
        assert wait_until(lambda: queue.stats.workers_connected == 3, timeout=30)
        assert _next_cycles(factory)
        assert factory.workers_started == 3 and queue.stats.tasks_waiting == 3  # max_workers holds
        (tmp_path / "go").touch()
        done = drain(queue, 6)
    assert [t.result for t in done] == [wq.WORK_QUEUE_RESULT_SUCCESS] * 6
    assert {t.output for t in done} == {"ran\n"}


def test_attributes_set_after_creation_are_the_workers_resources(queue, stopped_at_end):
    factory = wq.Factory("local", manager=queue)
    factory.min_workers = factory.max_workers = 1
    factory.cores, factory.memory, factory.disk, factory.gpus = 2, 300, 400, 3
    stopped_at_end(factory)
    with factory:
        assert wait_until(lambda: queue.stats.workers_connected == 1, timeout=30)
        (worker,) = queue.status("workers")
        assert {k: worker["resources"][k] for k in ("cores", "memory", "disk", "gpus")} == {
            "cores": 2,
            "memory": 300,
            "disk": 400,
            "gpus": 3,
        }
        task = wq.Task("echo $CUDA_VISIBLE_DEVICES")
        task.specify_gpus(3)
        queue.submit(task)
        (done,) = drain(queue, 1)
    assert done.result == wq.WORK_QUEUE_RESULT_SUCCESS and done.output.strip() == "0,1,2"


def test_leaving_the_with_block_stops_every_worker_it_started(queue, stopped_at_end):
    factory = wq.Factory("local", manager=queue)
    factory.min_workers = factory.max_workers = 2
    stopped_at_end(factory)
    with factory:
        assert wait_until(lambda: queue.stats.workers_connected == 2, timeout=30)
        pids = factory._thread.pids()
        assert len(pids) == 2
    assert _gone(pids)
    assert queue.stats.workers_connected == 0 and factory.workers_started == 0


def test_start_and_stop_without_a_with_block(queue, stopped_at_end):
    factory = wq.Factory("local", manager=queue)
    factory.min_workers = factory.max_workers = 1
    with pytest.raises(RuntimeError, match="not yet started"):
        factory.stop()
    stopped_at_end(factory)
    assert factory.start() is factory
    assert wait_until(lambda: queue.stats.workers_connected == 1, timeout=30)
    pids = factory._thread.pids()
    factory.stop()
    assert _gone(pids)


def test_max_workers_raised_while_running_starts_more(queue, tmp_path, stopped_at_end):
    factory = wq.Factory("local", manager=queue)
    factory.min_workers, factory.max_workers, factory.cores = 1, 1, 1
    stopped_at_end(factory)
    with factory:
        for _ in range(2):
            queue.submit(_blocked_task(str(tmp_path / "go")))
        assert wait_until(lambda: queue.stats.tasks_on_workers == 1, timeout=30)
        factory.max_workers = 2  # Work Queue's example: a pile of tasks, allow more workers
        assert wait_until(lambda: queue.stats.workers_connected == 2, timeout=30)
        with pytest.raises(AttributeError, match="cannot be changed once the factory is running"):
            factory.gpus = 1  # not an option of Work Queue's configuration file
        (tmp_path / "go").touch()
        drain(queue, 2)


def test_surplus_workers_leave_by_their_idle_timeout(queue, tmp_path, stopped_at_end):
    factory = wq.Factory("local", manager=queue)
    factory.min_workers, factory.max_workers, factory.cores, factory.timeout = 0, 2, 1, 1
    stopped_at_end(factory)
    with factory:
        for _ in range(2):
            queue.submit(_blocked_task(str(tmp_path / "go")))
        assert wait_until(lambda: queue.stats.workers_connected == 2, timeout=30)
        (tmp_path / "go").touch()
        drain(queue, 2)
        assert wait_until(lambda: factory.workers_started == 0, timeout=30)  # none killed: they left
        assert _next_cycles(factory)
        assert factory.workers_started == 0  # min_workers 0: none needed, none started again


def test_env_extra_options_and_scratch_dir_shape_the_workers(queue, tmp_path, stopped_at_end):
    factory = wq.Factory("local", manager=queue)
    factory.min_workers = factory.max_workers = 1
    factory.env = "FACTORY_VAR=42"
    factory.extra_options = "--parent-death --cache-size 10"  # Work Queue's binding adds --parent-death
    factory.scratch_dir = str(tmp_path / "scratch")
    stopped_at_end(factory)
    with factory:
        queue.submit(wq.Task("echo $FACTORY_VAR; pwd"))
        (done,) = drain(queue, 1)
    value, sandbox = done.output.split()
    assert value == "42" and sandbox.startswith(str(tmp_path / "scratch") + os.sep)


def test_tasks_announced_with_specify_num_tasks_left_get_workers_before_they_come(queue, tmp_path, stopped_at_end):
    factory = wq.Factory("local", manager=queue, log_file=str(tmp_path / "factory.log"))
    factory.min_workers, factory.max_workers, factory.cores = 0, 2, 1
    stopped_at_end(factory)
    with factory:
        assert _next_cycles(factory)
        assert factory.workers_started == 0  # nothing waits, nothing announced
        queue.specify_num_tasks_left(5)
        assert wait_until(lambda: queue.stats.workers_connected == 2, timeout=30)
    assert "2 to start" in (tmp_path / "factory.log").read_text()


def test_manager_name_is_the_queue_on_the_redis_of_the_environment(queue, queue_name, redis_url, monkeypatch):
    monkeypatch.setenv("WQ_REDIS_URL", redis_url)
    factory = wq.Factory("local", manager_name=queue_name)
    factory.min_workers = factory.max_workers = 1
    assert factory.manager_name == queue_name
    with factory:
        queue.submit(wq.Task("echo by name"))
        (done,) = drain(queue, 1)
    assert done.output == "by name\n"


def test_manager_host_port_is_a_redis_address_serving_queue_default(redis_url):
    port = urlsplit(redis_url).port
    with wq.WorkQueue("default", redis_url=redis_url) as q:
        factory = wq.Factory("local", manager_host_port=f"localhost:{port}")
        factory.min_workers = factory.max_workers = 1
        with factory:
            q.submit(wq.Task("echo by address"))
            (done,) = drain(q, 1)
    assert done.output == "by address\n"


def test_a_signed_queue_gives_its_factory_workers_its_secret(redis_url, queue_name):
    with wq.WorkQueue(queue_name, redis_url=redis_url, secret="factory-secret") as q:
        factory = wq.Factory("local", manager=q)
        factory.min_workers = factory.max_workers = 1
        with factory:
            q.submit(wq.PythonTask(my_sum, 2, 3))
            (done,) = drain(q, 1)
    assert done.output == 5


def test_options_unknown_unset_or_of_batch_systems():
    with pytest.raises(ValueError, match="manager_name"):
        wq.Factory("local")
    with pytest.raises(NotImplementedError, match="not available"):
        wq.Factory("k8s", manager_name="proj")
    factory = wq.Factory("local", manager_name="proj")
    with pytest.raises(AttributeError, match="not a supported option"):
        factory.no_such_option = 1
    with pytest.raises(KeyError, match="has not been set yet"):
        factory.min_workers  # noqa: B018  (Work Queue's KeyError for an option not set)
    assert getattr(factory, "max_workers", 100) == 100
    with pytest.raises(ValueError, match="integer"):
        factory.cores = "four"
    with pytest.raises(ValueError, match="HOST:PORT"):
        wq.Factory("local", manager_host_port="no-port")
    factory.condor_requirements = "OpSys == LINUX"  # accepted: batch-system options mean nothing locally


def test_work_queue_alloc_test_program_runs_with_its_own_factory(tmp_path, monkeypatch):
    """CCTools' wq_alloc_test.py in spirit, as its test script runs it: one worker of 4 cores,
    2000 MB memory, 2000 MB disk and 8 (declared) GPUs, started by the program's own Factory
    on ``localhost:{q.port}``, with no Redis URL at all (the embedded Redis)."""
    monkeypatch.delenv("WQ_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    program = tmp_path / "alloc.py"
    program.write_text(
        textwrap.dedent(
            """
            import sys
            import wq_redis as wq

            (worker_cores, worker_memory, worker_disk, worker_gpus) = (int(a) for a in sys.argv[1:5])
            q = wq.WorkQueue(0)
            worker = wq.Factory("local", manager_host_port="localhost:{}".format(q.port))
            worker.max_workers = 1
            worker.min_workers = 1
            worker.cores = worker_cores
            worker.memory = worker_memory
            worker.disk = worker_disk
            worker.gpus = worker_gpus
            worker.debug = "all"
            with worker:
                for category, maximum in [
                    ("all_specified", {"cores": 1, "memory": 2, "disk": 3, "gpus": 4}),
                    ("all_specified_no_gpu", {"cores": 1, "memory": 2, "disk": 3}),
                    ("all_gpus", {"gpus": worker_gpus}),
                ]:
                    q.specify_category_max_resources(category, maximum)
                    t = wq.Task("/bin/echo hello")
                    t.specify_category(category)
                    q.submit(t)
                    t = q.wait(30)
                    assert t and t.result == wq.WORK_QUEUE_RESULT_SUCCESS and t.output == "hello\\n", category
                    print(category, "ok")
                (w,) = q.status("workers")
                print("worker", *(w["resources"][r] for r in ("cores", "memory", "disk", "gpus")))
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, str(program), "4", "2000", "2000", "8"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split("\n")[:4] == [
        "all_specified ok",
        "all_specified_no_gpu ok",
        "all_gpus ok",
        "worker 4 2000 2000 8",
    ]
