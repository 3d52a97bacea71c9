"""Recording stand-ins of batch systems' commands (qsub, qstat, qdel, bsub, bjobs, bkill,
condor_submit, condor_q, condor_rm, sbatch, squeue, scancel), written by a test onto a
directory put first on PATH.  They are NOT the batch systems: each records its argv (and
a condor submit file's text) to ``calls.jsonl``, and the submit command starts the job
script as a real local process (the environment is inherited, as ``-V`` / ``getenv``
export it) or, with ``STANDIN_PENDING=1``, leaves it pending forever.  The status command
prints the jobs still alive in that system's own format; the remove command SIGTERMs them.
"""

from __future__ import annotations

import json
import os
import stat
import sys

COMMANDS = {
    "slurm": ("sbatch", "squeue", "scancel"),
    "sge": ("qsub", "qstat", "qdel"),
    "pbs": ("qsub", "qstat", "qdel"),
    "lsf": ("bsub", "bjobs", "bkill"),
    "condor": ("condor_submit", "condor_q", "condor_rm"),
}

_STANDIN = r"""
import json, os, signal, subprocess, sys
KIND, ROLE, STATE = {kind!r}, {role!r}, {state!r}
jobs_dir = os.path.join(STATE, "jobs")
os.makedirs(jobs_dir, exist_ok=True)
record = {{"command": os.path.basename(sys.argv[0]), "argv": sys.argv[1:]}}

def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (ended, not yet reaped) is no job
        with open(f"/proc/{{pid}}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

if ROLE == "submit":
    script = sys.argv[-1]
    if KIND == "condor":
        text = open(script).read()
        record["file"] = text
        script = [l.split("=", 1)[1].strip() for l in text.splitlines() if l.startswith("executable")][0]
    with open(os.path.join(STATE, "counter"), "a+") as f:
        f.seek(0)
        number = len(f.read()) + 100
        f.write("x")
    pid = "-"
    if os.environ.get("STANDIN_PENDING") != "1":
        pid = str(subprocess.Popen(["sh", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True).pid)
    open(os.path.join(jobs_dir, str(number)), "w").write(pid)
    print({{"slurm": f"{{number}}", "sge": f'Your job {{number}} ("w") has been submitted',
           "pbs": f"{{number}}.standin-server", "lsf": f"Job <{{number}}> is submitted to queue <normal>.",
           "condor": f"Submitting job(s).\n1 job(s) submitted to cluster {{number}}."}}[KIND])
elif ROLE == "status":
    rows = []
    for name in sorted(os.listdir(jobs_dir)):
        pid = open(os.path.join(jobs_dir, name)).read()
        if pid != "-" and not alive(int(pid)):
            os.unlink(os.path.join(jobs_dir, name))
            continue
        running = pid != "-"
        if KIND == "slurm":
            rows.append(f"{{name}} {{'RUNNING' if running else 'PENDING'}}")
        elif KIND == "sge":
            rows.append(f"{{name}} 0.555 w root {{'r' if running else 'qw'}} 01/01/2025 00:00:00 all.q 1")
        elif KIND == "pbs":
            rows.append(f"{{name}}.standin-server w root 00:00:00 {{'R' if running else 'Q'}} batch")
        elif KIND == "lsf":
            rows.append(f"{{name}} root {{'RUN' if running else 'PEND'}} normal host host w Jan 1 00:00")
        else:
            rows.append(f"{{name}} {{2 if running else 1}}")
    header = {{"sge": ["job-ID prior name user state submit/start at queue slots", "-" * 40],
              "pbs": ["Job id Name User Time Use S Queue", "-" * 40],
              "lsf": ["JOBID USER STAT QUEUE FROM_HOST EXEC_HOST JOB_NAME SUBMIT_TIME"]}}.get(KIND, [])
    if KIND == "lsf" and not rows:
        print("No unfinished job found", file=sys.stderr)
        sys.exit(255)
    print("\n".join(header + rows) if rows else "")
else:
    for name in sys.argv[1:]:
        path = os.path.join(jobs_dir, name)
        if os.path.exists(path):
            pid = open(path).read()
            if pid != "-":
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except OSError:
                    pass
            os.unlink(path)
with open(os.path.join(STATE, "calls.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\n")
"""


class StandIns:
    """The stand-ins of one batch type in ``root``/bin (put it first on PATH)."""

    def __init__(self, kind: str, root: str) -> None:
        self.kind = kind
        self.bin = os.path.join(root, "bin")
        self.state = os.path.join(root, "state")
        os.makedirs(self.bin)
        os.makedirs(os.path.join(self.state, "jobs"))
        for role, command in zip(("submit", "status", "remove"), COMMANDS[kind], strict=True):
            path = os.path.join(self.bin, command)
            with open(path, "w") as out:
                out.write(f"#!{sys.executable}\n" + _STANDIN.format(kind=kind, role=role, state=self.state))
            os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def calls(self, command: str | None = None) -> list[dict]:
        path = os.path.join(self.state, "calls.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            calls = [json.loads(line) for line in f]
        return [c for c in calls if command is None or c["command"] == command]

    def jobs(self) -> dict[str, str]:
        """Job id -> pid ("-" for pending) of the jobs the stand-in still holds."""
        folder = os.path.join(self.state, "jobs")
        out = {}
        for name in os.listdir(folder):
            with open(os.path.join(folder, name)) as f:
                out[name] = f.read()
        return out

    def live_pids(self) -> list[int]:
        return [int(pid) for pid in self.jobs().values() if pid != "-"]
