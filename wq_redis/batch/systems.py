"""Each batch system's own command line: how to submit one worker job, read the job's id
from what the submit command prints, list the states of the user's jobs, and remove jobs.

One table-driven class covers SLURM, SGE, PBS and LSF (their submit commands take the
options on the command line, as CCTools' ``batch_queue_cluster`` drives them); HTCondor
takes a submit description file instead.  Every command runs without a shell: job options
are argv words, never interpolated text.  The worker's environment (the Redis URL with its
password) travels in the submit command's environment, exported into the job by each
system's own flag (``--export=ALL``, ``-V``, ``-env all``, ``getenv = true``), so it is
never written into a file or onto a command line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

BATCH_TYPES = ("local", "slurm", "condor", "sge", "pbs", "lsf")


class JobState(Enum):
    PENDING = "pending"  # queued, held: no worker yet; cancelling it stops nothing running
    RUNNING = "running"  # a worker runs (or starts, or is suspended)
    ENDED = "ended"


@dataclass(frozen=True)
class Resources:
    """What one worker job asks the batch system for (None: not set, the system's default)."""

    cores: int | None = None
    memory: int | None = None  # MB
    disk: int | None = None  # MB
    gpus: int | None = None


class SubmitFailed(RuntimeError):
    """The submit command failed or printed no job id."""


def _number(text: str) -> str | None:
    match = re.search(r"\d+", text)
    return match.group(0) if match else None


@dataclass(frozen=True)
class ClusterSystem:
    """A batch system whose submit command takes the job's options as arguments."""

    name: str
    submit: str
    status: str
    remove: str
    fixed: tuple[str, ...]  # options every job gets (working directory, output, environment)
    name_flag: str
    resources: Callable[[Resources], list[str]]
    job_id: re.Pattern[str]  # the id in the submit command's output
    status_args: Callable[[str], list[str]]  # the user's name -> the status command's arguments
    states: Callable[[str], dict[str, JobState]]  # the status command's output -> id: state

    def submit_argv(self, script: str, job_name: str, resources: Resources, options: Sequence[str]) -> list[str]:
        return [self.submit, *self.fixed, self.name_flag, job_name, *self.resources(resources), *options, script]

    def parse_job_id(self, output: str) -> str:
        match = self.job_id.search(output)
        if not match:
            raise SubmitFailed(f"{self.submit} printed no job id: {output.strip()[:300]!r}")
        return match.group(1)

    def status_argv(self, user: str) -> list[str]:
        return [self.status, *self.status_args(user)]

    def remove_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.remove, *job_ids]


# -- SLURM ----------------------------------------------------------------------------------
_SLURM_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
_SLURM_RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}


def _slurm_resources(r: Resources) -> list[str]:
    args = ["-N", "1", "-n", "1", "-c", str(r.cores or 1)]
    if r.memory:
        args.append(f"--mem={r.memory}M")
    if r.gpus:
        args.append(f"--gpus={r.gpus}")
    return args


def _slurm_states(output: str) -> dict[str, JobState]:
    states = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            state = parts[1].upper()
            states[parts[0]] = (
                JobState.PENDING
                if state in _SLURM_PENDING
                else JobState.RUNNING
                if state in _SLURM_RUNNING
                else JobState.ENDED
            )
    return states


# -- SGE (Grid Engine) ----------------------------------------------------------------------
def _sge_resources(r: Resources) -> list[str]:
    args = []
    if r.cores and r.cores > 1:
        args += ["-pe", "smp", str(r.cores)]  # the parallel environment CCTools' factory names
    if r.memory:
        args += ["-l", f"h_vmem={r.memory}M"]
    return args


def _table_states(output: str, state_column: int, pending: set[str], ended: set[str]) -> dict[str, JobState]:
    """A ``qstat``/``bjobs`` table: rows whose first word starts with the job's number."""
    states = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) <= state_column or not parts[0][:1].isdigit():
            continue
        job_id, state = parts[0].split(".")[0], parts[state_column]
        states[job_id] = (
            JobState.ENDED if state in ended else JobState.PENDING if state in pending else JobState.RUNNING
        )
    return states


def _sge_states(output: str) -> dict[str, JobState]:
    # qstat: job-ID prior name user state ...; SGE's letters: qw, hqw, Eqw wait; r, t, Rr, dr run
    states = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) > 4 and parts[0].isdigit():
            letters = parts[4]
            states[parts[0]] = JobState.PENDING if "q" in letters and "r" not in letters else JobState.RUNNING
    return states


# -- PBS / Torque ---------------------------------------------------------------------------
def _pbs_resources(r: Resources) -> list[str]:
    spec = f"nodes=1:ppn={r.cores or 1}"
    if r.memory:
        spec += f",mem={r.memory}mb"
    if r.disk:
        spec += f",file={r.disk}mb"
    return ["-l", spec]


def _pbs_states(output: str) -> dict[str, JobState]:
    # qstat's default table: Job id, Name, User, Time Use, S, Queue
    return _table_states(output, 4, pending={"Q", "H", "W", "T", "M"}, ended={"C", "F", "X"})


# -- LSF ------------------------------------------------------------------------------------
def _lsf_resources(r: Resources) -> list[str]:
    args = []
    if r.cores:
        args += ["-n", str(r.cores)]
    if r.memory:
        args += ["-M", f"{r.memory}MB"]
    return args


def _lsf_states(output: str) -> dict[str, JobState]:
    # bjobs -w: JOBID USER STAT QUEUE FROM_HOST EXEC_HOST JOB_NAME SUBMIT_TIME
    return _table_states(output, 2, pending={"PEND", "PSUSP", "WAIT"}, ended={"DONE", "EXIT", "ZOMBI"})


CLUSTER_SYSTEMS: dict[str, ClusterSystem] = {
    "slurm": ClusterSystem(
        name="slurm",
        submit="sbatch",
        status="squeue",
        remove="scancel",
        fixed=("--parsable", "-o", "/dev/null", "-e", "/dev/null", "--export=ALL"),
        name_flag="-J",
        resources=_slurm_resources,
        job_id=re.compile(r"^\s*(\d+)", re.MULTILINE),  # --parsable: "ID" or "ID;CLUSTER"
        status_args=lambda user: ["--noheader", "--format=%i %T", "--user", user],
        states=_slurm_states,
    ),
    "sge": ClusterSystem(
        name="sge",
        submit="qsub",
        status="qstat",
        remove="qdel",
        fixed=("-cwd", "-j", "y", "-V", "-o", "/dev/null", "-S", "/bin/sh"),
        name_flag="-N",
        resources=_sge_resources,
        job_id=re.compile(r"Your job(?:-array)? (\d+)"),
        status_args=lambda user: ["-u", user],
        states=_sge_states,
    ),
    "pbs": ClusterSystem(
        name="pbs",
        submit="qsub",
        status="qstat",
        remove="qdel",
        fixed=("-V", "-j", "oe", "-o", "/dev/null"),
        name_flag="-N",
        resources=_pbs_resources,
        job_id=re.compile(r"^\s*(\d+)", re.MULTILINE),  # "ID.SERVER"
        status_args=lambda user: [],
        states=_pbs_states,
    ),
    "lsf": ClusterSystem(
        name="lsf",
        submit="bsub",
        status="bjobs",
        remove="bkill",
        fixed=("-o", "/dev/null", "-e", "/dev/null", "-env", "all"),
        name_flag="-J",
        resources=_lsf_resources,
        job_id=re.compile(r"Job <(\d+)> is submitted"),
        status_args=lambda user: ["-w", "-u", user],
        states=_lsf_states,
    ),
}


# -- HTCondor -------------------------------------------------------------------------------
_CONDOR_STATES = {
    "1": JobState.PENDING,  # idle
    "2": JobState.RUNNING,
    "3": JobState.ENDED,  # removed
    "4": JobState.ENDED,  # completed
    "5": JobState.PENDING,  # held: no worker runs
    "6": JobState.RUNNING,  # transferring output
    "7": JobState.RUNNING,  # suspended
}


@dataclass(frozen=True)
class CondorSystem:
    """HTCondor: a submit description file per job (``condor_submit FILE``), ``condor_q``'s
    autoformat for the states, ``condor_rm`` to remove."""

    name: str = "condor"
    submit: str = "condor_submit"
    status: str = "condor_q"
    remove: str = "condor_rm"

    def description(self, script: str, job_name: str, r: Resources, options: Sequence[str]) -> str:
        """The submit description: CCTools' defaults (1 core, 1024 MB memory and disk)
        where a size is not set; ``options`` are further lines (``--batch-options``)."""
        lines = [
            "universe = vanilla",
            f"executable = {script}",
            "transfer_executable = true",
            "should_transfer_files = yes",
            "when_to_transfer_output = on_exit",
            "output = /dev/null",
            "error = /dev/null",
            "getenv = true",
            "notification = never",
            f"batch_name = {job_name}",
            f"request_cpus = {r.cores or 1}",
            f"request_memory = {r.memory or 1024}",
            f"request_disk = {(r.disk or 1024) * 1024}",  # KB
        ]
        if r.gpus:
            lines.append(f"request_gpus = {r.gpus}")
        return "\n".join([*lines, *options, "queue", ""])

    def submit_argv(self, description_file: str) -> list[str]:
        return [self.submit, description_file]

    def parse_job_id(self, output: str) -> str:
        match = re.search(r"submitted to cluster (\d+)", output)
        if not match:
            raise SubmitFailed(f"{self.submit} printed no job id: {output.strip()[:300]!r}")
        return match.group(1)

    def status_argv(self, user: str) -> list[str]:
        return [self.status, "-af", "ClusterId", "JobStatus"]  # the user's own jobs: condor_q's default

    def states(self, output: str) -> dict[str, JobState]:
        states = {}
        for line in output.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                states[parts[0]] = _CONDOR_STATES.get(parts[1], JobState.RUNNING)
        return states

    def remove_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.remove, *job_ids]


def batch_system(batch_type: str) -> ClusterSystem | CondorSystem:
    if batch_type == "condor":
        return CondorSystem()
    try:
        return CLUSTER_SYSTEMS[batch_type]
    except KeyError:
        raise ValueError(f"unknown batch type {batch_type!r}: one of {', '.join(BATCH_TYPES)}") from None
