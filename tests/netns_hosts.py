"""Several "hosts" on this machine for the tests that need real addresses and host names
(tests/test_netns.py, tests/test_deploy_redis_live.py).

Each host is a Linux network namespace with one interface (``eth0``) and its own address,
joined by a veth pair to a bridge that lives in a namespace of its own (the "switch");
the root namespace (the test process) can be plugged in too:

    host "a"  10.213.N.2 ─┐
    host "b"  10.213.N.3 ─┼─ bridge in the switch namespace (no address of its own)
    root ns   10.213.N.10 ┘

The addresses exist only on these veths, inside namespaces created here; nothing leaves
the machine.  Programs run in their host's namespace under their own host name (a UTS
namespace).  Names resolve through a per-namespace hosts file: ``ip netns exec NAME``
bind-mounts /etc/netns/NAME/hosts over /etc/hosts (ip-netns(8)).  ``close`` stops every
process started here (by PID) and removes the namespaces, the veths, the hosts files and
every directory created for them, also when a test fails.  Needs root and iproute2:
``hosts_or_skip`` skips otherwise, except in CI (CI=true), which runs as root and must
run these tests.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping

import pytest

NETNS_ETC = "/etc/netns"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _free_subnet() -> str:
    """A 10.213.N prefix no interface or route of this machine uses yet."""
    taken = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    taken += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for n in random.sample(range(1, 255), 254):
        if f"10.213.{n}." not in taken:
            return f"10.213.{n}"
    raise RuntimeError("every 10.213.N/24 is in use")


class Network:
    """The switch, the hosts plugged into it and the processes run on them."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.prefix = _free_subnet()
        self.switch = f"wqt-{self.tag}-switch"
        self.namespaces: list[str] = []  # created, in order (the switch first)
        self.ns_of: dict[str, str] = {}  # host name -> its namespace
        self.root_link: str | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.made_dirs: list[str] = []  # created here, removed (if empty) at close
        self.made_files: list[str] = []

    def address(self, octet: int) -> str:
        return f"{self.prefix}.{octet}"

    def _add_namespace(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def build(self) -> Network:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def _plug(self, port: str) -> None:
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")

    def add_host(self, host: str, octet: int) -> str:
        """A namespace for ``host`` at address ``octet`` on the bridge; its name."""
        ns = f"wqt-{self.tag}-{host}"
        self._add_namespace(ns)
        self.ns_of[host] = ns
        port = f"p{octet}"  # the switch's end (interface names have at most 15 characters)
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.switch)
        self._plug(port)
        _ip("-n", ns, "addr", "add", f"{self.address(octet)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        return ns

    def add_root(self, octet: int) -> None:
        """Plug the root namespace (this process) in, at address ``octet``."""
        self.root_link = f"wq{self.tag}r"
        _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "proot", "netns", self.switch)
        self._plug("proot")
        _ip("addr", "add", f"{self.address(octet)}/24", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")

    def make_dir(self, path: str) -> None:
        """Create ``path`` (and missing parents) unless it exists; removed at close."""
        missing = []
        while not os.path.exists(path):
            missing.append(path)
            path = os.path.dirname(path)
        for directory in reversed(missing):
            os.mkdir(directory)
            self.made_dirs.append(directory)

    def write_hosts(self, names: Mapping[str, Iterable[str]]) -> None:
        """Every host's /etc/hosts (address -> names), as its namespace's hosts file."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{address}\t{' '.join(aliases)}" for address, aliases in names.items()]
        for ns in self.ns_of.values():
            self.make_dir(os.path.join(NETNS_ETC, ns))
            path = os.path.join(NETNS_ETC, ns, "hosts")
            with open(path, "w") as handle:
                handle.write("\n".join(lines) + "\n")
            self.made_files.append(path)

    def spawn(
        self,
        host: str,
        args: list[str],
        env: Mapping[str, str],
        stdout: int | None = None,
        stderr: int | None = None,
        stdin: int | None = subprocess.DEVNULL,
        mounts: Mapping[str, str] | None = None,
        read_only: Iterable[str] = (),
    ) -> subprocess.Popen[bytes]:
        """Run ``args`` on ``host``: in its namespace, under its host name (a UTS namespace)
        and, with ``mounts`` (mount point -> directory), in a mount namespace of its own
        where each directory is bind-mounted at its mount point, as a container's volumes
        are (those in ``read_only`` read-only).  /run gets a fresh tmpfs there, so mount
        points under it need no directory on this machine; other missing mount points are
        created here and removed at close.  Every program execs the next, so the process's
        pid ends up the program's own."""
        setup = f"hostname {host}"
        unshare = ["unshare", "--uts"]
        if mounts:
            unshare.append("--mount")  # a private mount namespace: nothing leaks back
            if any(point.startswith("/run/") for point in mounts):
                setup += " && mount -t tmpfs -o mode=755 tmpfs /run"
            for point, source in mounts.items():
                if point.startswith("/run/"):
                    setup += f" && mkdir -p {point}"
                else:
                    self.make_dir(point)
                setup += f" && mount --bind {source} {point}"
                if point in read_only:
                    setup += f" && mount -o remount,bind,ro {point}"
        command = ["ip", "netns", "exec", self.ns_of[host], *unshare, "sh", "-c", f'{setup} && exec "$@"', "sh", *args]
        process = subprocess.Popen(command, env=dict(env), stdin=stdin, stdout=stdout, stderr=stderr)
        self.processes.append(process)
        return process

    def close(self) -> None:
        # SIGTERM first (a server removes its data directory, a worker drains), then SIGKILL
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for ns in reversed(self.namespaces):  # deleting a namespace deletes the veth ends inside it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if self.root_link:
            subprocess.run(["ip", "link", "del", self.root_link], capture_output=True)
        for path in self.made_files:
            if os.path.exists(path):
                os.unlink(path)
        for directory in reversed(self.made_dirs):
            try:
                os.rmdir(directory)
            except OSError:
                pass  # not empty: something else put files there since


def _cannot_build_hosts() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the namespace tests: {reason}")
    pytest.skip(reason)


def network_or_skip(plan: Callable[[Network], object]) -> Network:
    """A Network built by ``plan`` (which adds the hosts), or a skip saying why there can
    be none here (a failure in CI)."""
    reason = _cannot_build_hosts()
    if reason:
        _skip_or_fail(reason)
    network = Network()
    try:
        plan(network.build())
    except subprocess.CalledProcessError as exc:
        network.close()
        _skip_or_fail(f"cannot create network namespaces here: {' '.join(exc.cmd)}: {exc.stderr.strip()}")
    return network
