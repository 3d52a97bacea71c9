"""The factory's batch types other than SLURM, against RECORDING STAND-INS of their commands
(tests/batch_standins.py: fake qsub/qstat/qdel, bsub/bjobs/bkill, condor_submit/condor_q/
condor_rm on PATH that record their argv and run each job script as a real local worker).
They check what the factory asks each system for and how it tracks and removes its jobs;
tests/test_factory_slurm.py runs the same code against a real SLURM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
from batch_standins import StandIns
from conftest import drain, wait_until
from helpers_tasks import my_sum

import wq_redis as wq
from wq_redis.batch import JobState, batch_system
from wq_redis.embedded import factory as factory_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ["condor", "sge", "pbs", "lsf"]
# what each system's submit command is asked for a worker of 1 core and 300 MB
ASKED = {
    "condor": ["request_cpus = 1", "request_memory = 300", "getenv = true"],
    "sge": ["-V", "-l", "h_vmem=300M"],
    "pbs": ["-V", "-l", "nodes=1:ppn=1,mem=300mb"],
    "lsf": ["-env", "all", "-n", "1", "-M", "300MB"],
}


@pytest.fixture
def standins(request, tmp_path, monkeypatch):
    fakes = StandIns(request.param, str(tmp_path / "standins"))
    monkeypatch.setenv("PATH", fakes.bin + os.pathsep + os.environ["PATH"])
    monkeypatch.setattr(factory_module, "BATCH_CYCLE_SECONDS", 0.5)
    yield fakes
    for pid in fakes.live_pids():  # whatever a failed test left: by pid
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


def _asked(fakes: StandIns) -> str:
    call = fakes.calls(batch_system(fakes.kind).submit)[0]
    return call.get("file") or " ".join(call["argv"])


@pytest.mark.parametrize("standins", KINDS, indirect=True)
def test_stand_in_jobs_run_the_tasks_then_idle_out_and_are_forgotten(standins, queue, redis_url, tmp_path):
    factory = wq.Factory(standins.kind, manager=queue)
    factory.min_workers, factory.max_workers, factory.cores, factory.memory, factory.timeout = 0, 2, 1, 300, 1
    factory.scratch_dir = str(tmp_path / "scratch")
    with factory:
        for n in range(4):
            task = wq.PythonTask(my_sum, n, 10)
            task.specify_cores(1)
            queue.submit(task)
        done = drain(queue, 4, timeout=60)
        assert sorted(t.output for t in done) == [10, 11, 12, 13]
        assert 1 <= len(standins.calls(batch_system(standins.kind).submit)) <= 2  # max_workers
        assert wait_until(lambda: factory.workers_started == 0, timeout=60)  # idled out, status lists none
        assert standins.calls(batch_system(standins.kind).status)
    asked = _asked(standins)
    for word in ASKED[standins.kind]:
        assert word in asked, asked
    for call in standins.calls():  # the URL travels in the environment only
        assert redis_url not in " ".join(call["argv"]) + call.get("file", "")
    assert standins.calls(batch_system(standins.kind).remove) == []  # nothing left to remove
    assert os.listdir(tmp_path / "scratch") == []


@pytest.mark.parametrize("standins", KINDS, indirect=True)
def test_pending_jobs_are_cancelled_when_the_factory_stops(standins, queue, monkeypatch):
    monkeypatch.setenv("STANDIN_PENDING", "1")  # the stand-in never starts these jobs
    factory = wq.Factory(standins.kind, manager=queue)
    factory.min_workers = factory.max_workers = factory.workers_per_cycle = 2
    factory.start()
    assert wait_until(lambda: len(standins.jobs()) == 2, timeout=30)
    assert factory._thread._cycle_seconds == 0.5 and wait_until(
        lambda: standins.calls(batch_system(standins.kind).status)
    )
    ids = sorted(standins.jobs())
    factory.stop()
    (removal,) = standins.calls(batch_system(standins.kind).remove)
    assert sorted(removal["argv"]) == ids and standins.jobs() == {}
    assert factory.workers_started == 0


@pytest.mark.parametrize("standins", ["lsf"], indirect=True)
def test_wq_redis_factory_from_its_environment_variables(standins, redis_url, queue, tmp_path):
    """`wq-redis factory` with its options in WQ_* variables: a worker job per the rule,
    a running one removed (bkill: its worker gets SIGTERM) when the factory gets SIGTERM."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH")])),
        "WQ_REDIS_URL": redis_url,
        "WQ_QUEUE": queue.name,
        "WQ_FACTORY_BATCH_TYPE": "lsf",
        "WQ_FACTORY_MIN_WORKERS": "1",
        "WQ_FACTORY_MAX_WORKERS": "1",
        "WQ_FACTORY_BATCH_OPTIONS": "-q short",
        "WQ_CORES": "1",
        "WQ_IDLE_TIMEOUT": "120",
        "WQ_FACTORY_CYCLE_SECONDS": "0.5",
    }
    factory = subprocess.Popen([sys.executable, "-m", "wq_redis", "factory"], env=env, stdin=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: queue.stats.workers_connected == 1, timeout=60)
        queue.submit(wq.PythonTask(my_sum, 1, 2))
        (done,) = drain(queue, 1)
        assert done.output == 3
        (job,) = standins.jobs()
        factory.send_signal(signal.SIGTERM)
        assert factory.wait(60) == 0
        (removal,) = standins.calls("bkill")
        assert removal["argv"] == [job]
        assert wait_until(lambda: queue.stats.workers_connected == 0, timeout=30)
    finally:
        if factory.poll() is None:
            factory.kill()
            factory.wait()
    (submit,) = standins.calls("bsub")
    assert submit["argv"][-3:-1] == ["-q", "short"]  # --batch-options, before the job script


def test_status_outputs_parse_to_job_states():
    """Each system's status lines (as its own command prints them) to pending/running."""
    assert batch_system("slurm").states("7 PENDING\n8 RUNNING\n9 COMPLETED\n") == {
        "7": JobState.PENDING,
        "8": JobState.RUNNING,
        "9": JobState.ENDED,
    }
    sge = "job-ID prior name\n----\n 12 0.5 w u qw 01/01 x 1\n 13 0.5 w u Eqw\n 14 0.5 w u r 01/01 q 1\n"
    assert batch_system("sge").states(sge) == {"12": JobState.PENDING, "13": JobState.PENDING, "14": JobState.RUNNING}
    pbs = "Job id Name User Time Use S Queue\n---\n21.srv w u 0 Q b\n22.srv w u 0 R b\n23.srv w u 0 C b\n"
    assert batch_system("pbs").states(pbs) == {"21": JobState.PENDING, "22": JobState.RUNNING, "23": JobState.ENDED}
    lsf = "JOBID USER STAT QUEUE\n31 u PEND normal\n32 u RUN normal\n33 u DONE normal\n"
    assert batch_system("lsf").states(lsf) == {"31": JobState.PENDING, "32": JobState.RUNNING, "33": JobState.ENDED}
    assert batch_system("condor").states("41 1\n42 2\n43 4\n44 5\n") == {
        "41": JobState.PENDING,
        "42": JobState.RUNNING,
        "43": JobState.ENDED,
        "44": JobState.PENDING,
    }
    assert batch_system("pbs").parse_job_id("123.server.example\n") == "123"
    assert batch_system("lsf").parse_job_id("Job <55> is submitted to queue <normal>.") == "55"
    with pytest.raises(ValueError, match="unknown batch type"):
        batch_system("mesos")
