"""The worker jobs one factory submitted to one batch system: submit, track, remove.

``BatchJobs`` keeps its own jobs' ids and what the system last said of each (pending or
running); a job the status command no longer lists, or lists as ended, is forgotten.  A
status command that fails (the scheduler is busy or down) changes nothing: the jobs stay
counted, so the factory submits no duplicates while it cannot see them.

The job runs a small ``sh`` script, written into the factory's scratch directory (one per
distinct command, kept while the factory runs, removed by ``cleanup``): the optional
environment activation (``--python-env``), then ``exec`` of the worker's command line.
The script holds no secret: the Redis URL is in the submit command's environment.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence

from .systems import CondorSystem, JobState, Resources, SubmitFailed, batch_system

log = logging.getLogger("wq_redis.batch")

# A batch command that takes longer than this is taken as failed (the next cycle tries again).
COMMAND_TIMEOUT_SECONDS = 120.0
# What status commands print on stderr (with a failing exit code) when the user has no job.
_NO_JOBS = re.compile(r"no (unfinished )?jobs? found|no matching job", re.IGNORECASE)


class BatchJobs:
    """Worker jobs on ``batch_type`` (slurm, condor, sge, pbs, lsf), submitted from
    ``scratch_dir`` with ``env`` as the submit commands' (and so the jobs') environment."""

    def __init__(
        self,
        batch_type: str,
        scratch_dir: str,
        env: Mapping[str, str],
        batch_options: Sequence[str] = (),
        job_name: str = "wq-worker",
    ) -> None:
        self.system = batch_system(batch_type)
        self.scratch_dir = os.path.abspath(scratch_dir)
        os.makedirs(self.scratch_dir, exist_ok=True)
        self._env = dict(env)
        self._options = list(batch_options)
        self._job_name = job_name
        self._user = getpass.getuser()
        self.jobs: dict[str, JobState] = {}  # job id -> last known state (never ENDED)
        self._files: set[str] = set()

    # -- counting --------------------------------------------------------------------------
    def count(self) -> int:
        """Jobs submitted and not known to have ended (pending or running)."""
        return len(self.jobs)

    def pending(self) -> list[str]:
        return [job for job, state in self.jobs.items() if state is JobState.PENDING]

    # -- submit ----------------------------------------------------------------------------
    def submit(self, count: int, command: Sequence[str], resources: Resources, setup: str | None = None) -> int:
        """Submit ``count`` jobs running ``command`` (after ``setup``, a shell line such as
        ``source venv/bin/activate``); returns how many the system took.  The first
        failure ends this round (logged): the next cycle tries again."""
        script = self._script(command, setup)
        submitted = 0
        for _ in range(count):
            try:
                job = self._submit_one(script, resources)
            except (SubmitFailed, OSError, subprocess.SubprocessError) as exc:
                log.warning("could not submit a worker job to %s: %s", self.system.name, exc)
                break
            self.jobs[job] = JobState.PENDING
            submitted += 1
            log.debug("submitted worker job %s to %s", job, self.system.name)
        return submitted

    def _submit_one(self, script: str, resources: Resources) -> str:
        system = self.system
        if isinstance(system, CondorSystem):
            description = self._write(
                script + ".submit", system.description(script, self._job_name, resources, self._options)
            )
            argv = system.submit_argv(description)
        else:
            argv = system.submit_argv(script, self._job_name, resources, self._options)
        done = self._run(argv)
        if done.returncode != 0:
            raise SubmitFailed(f"{shlex.join(argv[:1])} exited with {done.returncode}: {done.stderr.strip()[:300]}")
        return system.parse_job_id(done.stdout)

    def _script(self, command: Sequence[str], setup: str | None) -> str:
        lines = ["#!/bin/sh", "# a wq-redis worker, submitted by a wq-redis factory"]
        if setup:
            lines.append(setup)
        lines.append(f"exec {shlex.join(command)}")
        text = "\n".join(lines) + "\n"
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return self._write(f"wq-worker-{digest}.sh", text, mode=0o755)

    def _write(self, name: str, text: str, mode: int = 0o644) -> str:
        path = os.path.join(self.scratch_dir, os.path.basename(name))
        if path not in self._files or not os.path.exists(path):
            with open(path, "w") as out:
                out.write(text)
            os.chmod(path, mode)
            self._files.add(path)
        return path

    # -- track -----------------------------------------------------------------------------
    def poll(self) -> list[str]:
        """Ask the system for its jobs' states; returns the ids of this factory's jobs that
        ended since the last poll (and forgets them)."""
        if not self.jobs:
            return []
        argv = self.system.status_argv(self._user)
        try:
            done = self._run(argv)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("%s failed: %s; the worker jobs stay counted", argv[0], exc)
            return []
        if done.returncode != 0 and not _NO_JOBS.search(done.stderr + done.stdout):
            log.warning("%s exited with %d: %s", argv[0], done.returncode, done.stderr.strip()[:300])
            return []
        states = self.system.states(done.stdout)
        ended = []
        for job in list(self.jobs):
            state = states.get(job, JobState.ENDED)
            if state is JobState.ENDED:
                del self.jobs[job]
                ended.append(job)
            else:
                self.jobs[job] = state
        return ended

    # -- remove ----------------------------------------------------------------------------
    def remove(self, jobs: Sequence[str]) -> None:
        """Remove ``jobs`` with the system's own command (a running worker gets SIGTERM:
        it finishes or hands back its tasks) and stop counting them."""
        jobs = [job for job in jobs if job in self.jobs]
        if not jobs:
            return
        argv = self.system.remove_argv(jobs)
        try:
            done = self._run(argv)
            if done.returncode != 0:
                log.warning("%s exited with %d: %s", argv[0], done.returncode, done.stderr.strip()[:300])
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("%s failed: %s", argv[0], exc)
        for job in jobs:
            self.jobs.pop(job, None)

    def remove_all(self) -> None:
        """At the factory's end: pending jobs first (nothing runs there), then the running."""
        self.remove(self.pending())
        self.remove(list(self.jobs))

    def cleanup(self) -> None:
        """Remove the scripts and submit files this factory wrote."""
        for path in self._files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._files.clear()

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        log.debug("running %s", shlex.join(argv))
        return subprocess.run(
            list(argv),
            env=self._env,
            cwd=self.scratch_dir,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
