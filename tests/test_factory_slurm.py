"""The factory on a real SLURM (tests/slurm_cluster.py: a one-node cluster on localhost,
Debian's slurm-wlm and munge): workers submitted with sbatch run the tasks, idle out, and
their jobs end; at exit the factory cancels what is still pending."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from conftest import drain, wait_until
from helpers_tasks import my_sum
from slurm_cluster import slurm  # noqa: F401  (the fixture)

import wq_redis as wq
from wq_redis.embedded import factory as factory_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_core(task: wq.Task) -> wq.Task:
    task.specify_cores(1)
    return task


def test_sbatch_workers_run_the_tasks_then_idle_out_and_their_jobs_end(slurm, queue, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("SLURM_CONF", slurm.conf)
    monkeypatch.setattr(factory_module, "BATCH_CYCLE_SECONDS", 1.0)
    factory = wq.Factory("slurm", manager=queue)
    factory.min_workers, factory.max_workers, factory.cores, factory.timeout = 0, 2, 1, 3
    factory.scratch_dir = str(tmp_path / "scratch")
    with factory:
        for n in range(6):
            queue.submit(_one_core(wq.PythonTask(my_sum, n, 1)))
        done = drain(queue, 6, timeout=120)
        assert sorted(t.output for t in done) == [1, 2, 3, 4, 5, 6]
        jobs = dict(slurm.jobs())
        ours = [job for job, state in jobs.items() if state in ("RUNNING", "COMPLETED", "COMPLETING", "PENDING")]
        assert 1 <= len(ours) <= 2, jobs  # max_workers: no more than two sbatch jobs
        # the workers leave by their idle timeout (3 s): the jobs end by themselves, and the
        # factory, seeing them gone from squeue, counts none
        assert wait_until(lambda: factory.workers_started == 0, timeout=120), slurm.jobs()
        assert set(slurm.jobs().values()) == {"COMPLETED"}
        assert queue.stats.workers_connected == 0
    assert not os.listdir(tmp_path / "scratch")  # the job scripts are gone


def test_wq_redis_factory_cancels_its_pending_jobs_at_exit(slurm, redis_url, queue_name, tmp_path):  # noqa: F811
    """`wq-redis factory -T slurm` with more cores per worker than the node has: its job
    stays pending; SIGTERM to the factory cancels it (scancel) and removes its script."""
    env = {
        **slurm.env,
        "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH")])),
        "WQ_REDIS_URL": redis_url,
        "WQ_FACTORY_CYCLE_SECONDS": "1",
    }
    cores = (os.cpu_count() or 1) + 1
    scratch = tmp_path / "scratch"
    command = [sys.executable, "-m", "wq_redis", "factory", "-T", "slurm", "-M", queue_name, "-w", "1", "-W", "1"]
    factory = subprocess.Popen(
        [*command, "--cores", str(cores), "-S", str(scratch), "--log-level", "debug"], env=env, stdin=subprocess.DEVNULL
    )
    try:
        assert wait_until(lambda: "PENDING" in slurm.jobs().values(), timeout=60), slurm.jobs()
        assert len(slurm.jobs()) == 1
        factory.send_signal(signal.SIGTERM)
        assert factory.wait(60) == 0
        assert list(slurm.jobs().values()) == ["CANCELLED"]
        assert not os.listdir(scratch)
    finally:
        if factory.poll() is None:
            factory.kill()
            factory.wait()


def test_the_job_asks_slurm_for_the_workers_cores_and_memory(slurm, queue, monkeypatch):  # noqa: F811
    """sbatch -c and --mem: the job's allocation is the worker's size (scontrol shows it),
    and the worker offers that size; at the factory's exit its running job is removed."""
    cores = 1
    monkeypatch.setenv("SLURM_CONF", slurm.conf)
    monkeypatch.setattr(factory_module, "BATCH_CYCLE_SECONDS", 1.0)
    factory = wq.Factory("slurm", manager=queue)
    factory.min_workers, factory.max_workers, factory.cores, factory.memory, factory.timeout = 1, 1, cores, 200, 60
    with factory:
        assert wait_until(lambda: queue.stats.workers_connected == 1, timeout=60), slurm.jobs()
        ((job, state),) = slurm.jobs().items()
        shown = subprocess.run(
            ["scontrol", "show", "job", job], capture_output=True, text=True, env=slurm.env, check=True
        ).stdout
        assert state == "RUNNING" and f"NumCPUs={cores}" in shown and "MinMemoryNode=200M" in shown, shown
        (worker,) = queue.status("workers")
        assert worker["resources"]["cores"] == cores and worker["resources"]["memory"] == 200
    assert wait_until(lambda: set(slurm.jobs().values()) <= {"CANCELLED", "COMPLETED"}, timeout=60), slurm.jobs()
