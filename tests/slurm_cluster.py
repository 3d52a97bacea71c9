"""A real one-node SLURM cluster on localhost for the factory's tests: Debian's slurm-wlm
(slurmctld, slurmd) and munge, started as root from a generated slurm.conf in a temporary
directory, on free ports; every daemon stopped by its pid at teardown.

Without the packages (``make slurm`` installs them as root) or without root, the tests
skip with a message; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


class SlurmCluster:
    """munged, slurmctld and slurmd of one node; ``env`` points SLURM's commands at it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.conf = os.path.join(root, "slurm.conf")
        self.socket = os.path.join(root, "munge", "munge.sock")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "SLURM_CONF": self.conf}

    def start(self) -> None:
        for sub in ("munge", "state", "spool", "log"):
            os.makedirs(os.path.join(self.root, sub), mode=0o755, exist_ok=True)
        key = os.path.join(self.root, "munge", "munge.key")
        with open(key, "wb") as out:
            out.write(os.urandom(1024))
        os.chmod(key, 0o600)
        self._daemon(
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.socket}",
                f"--key-file={key}",
                f"--log-file={os.path.join(self.root, 'log', 'munged.log')}",
                f"--pid-file={os.path.join(self.root, 'munge', 'munged.pid')}",
                f"--seed-file={os.path.join(self.root, 'munge', 'seed')}",
            ],
            "munged.out",
        )
        assert _wait(lambda: os.path.exists(self.socket), 20), self._logs()
        self._write_conf()
        self._daemon(["slurmctld", "-D", "-i"], "slurmctld.out")
        self._daemon(["slurmd", "-D", "-N", self.host], "slurmd.out")
        assert _wait(self._node_idle, 60), self._logs()

    def _write_conf(self) -> None:
        cpus = os.cpu_count() or 1
        r = self.root
        lines = [
            "ClusterName=wqtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.socket}",
            "CredType=cred/munge",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "ReturnToService=2",
            "MinJobAge=300",  # ended jobs stay visible to squeue (as COMPLETED, CANCELLED) a while
            "KillWait=10",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        with open(self.conf, "w") as out:
            out.write("\n".join(lines) + "\n")

    def _daemon(self, argv: list[str], log: str) -> None:
        with open(os.path.join(self.root, "log", log), "wb") as out:
            self.processes.append(
                subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
            )

    def _node_idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env, check=False)
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def jobs(self) -> dict[str, str]:
        """Every job slurmctld knows, ended ones too: id -> state."""
        done = subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True, env=self.env, check=True
        )
        return dict(line.split() for line in done.stdout.splitlines() if line.strip())

    def _no_live_jobs(self) -> bool:
        try:
            return not set(self.jobs().values()) & {"RUNNING", "COMPLETING", "PENDING", "CONFIGURING"}
        except subprocess.CalledProcessError:  # slurmctld gone: nothing more to wait for
            return True

    def _logs(self) -> str:
        out = []
        for name in sorted(os.listdir(os.path.join(self.root, "log"))):
            with open(os.path.join(self.root, "log", name), errors="replace") as f:
                out.append(f"--- {name}\n{f.read()[-2000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        """The cluster's jobs cancelled and gone first (their slurmstepd would outlive
        slurmd), then every daemon by its pid: SIGTERM, SIGKILL whatever is left after 15 s."""
        if self.processes and self.processes[-1].poll() is None:
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env, capture_output=True, check=False)
            _wait(self._no_live_jobs, 30)
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def _install() -> None:
    """As root with apt-get: Debian's slurm-wlm and munge, their services not started (a
    policy-rc.d answering 101 for the install, when none is there), as `make slurm` does."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    guard = "/usr/sbin/policy-rc.d"
    placed = not os.path.exists(guard)
    if placed:
        with open(guard, "w") as out:
            out.write("#!/bin/sh\nexit 101\n")
        os.chmod(guard, 0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge"]
        if subprocess.run(command, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
            subprocess.run(command, env=env, capture_output=True, check=False)
    finally:
        if placed:
            os.unlink(guard)


@pytest.fixture
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    if any(not shutil.which(tool) for tool in TOOLS):
        _install()
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        _missing(
            f"SLURM not installed ({', '.join(missing)}): `make slurm` as root installs Debian's slurm-wlm and munge"
        )
    if os.geteuid() != 0:
        _missing("the one-node SLURM cluster runs its daemons as root: run the SLURM tests as root")
    root = str(tmp_path_factory.mktemp("slurm"))
    os.chmod(root, 0o755)  # munged wants its socket directory's parents searchable
    cluster = SlurmCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
