"""A worker's temporary work directory: made at start, removed at exit, found when orphaned.

A worker without ``--workdir`` makes ``wq-redis-worker-XXXX`` in the temporary directory
and removes it on every exit it controls.  One it does not control (SIGKILL, the machine
losing power, a manager's local worker killed with its parent) leaves the directory
behind, so each worker, at start, removes the directories whose owner is dead.

Who owns a directory is told by a lock, not a pid: the worker holds ``flock(LOCK_EX)`` on
``owner.lock`` inside it for its whole life, and the kernel drops that lock when the
worker dies, however it dies.  A directory whose lock can be taken is dead; a live one's
cannot be, and a reused pid cannot fool it.  The lock file appears under its final name
only once locked (it is locked under a temporary name, then renamed), so another worker
never sees a live directory's lock unlocked.  Directories of workers from before the lock
(no ``owner.lock``) are recognised by the ``cache.PID`` their owner made, and removed when
that process no longer exists or started after the directory was last changed (its pid
was reused).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile

log = logging.getLogger("wq_redis.worker")

PREFIX = "wq-redis-worker-"
LOCK_NAME = "owner.lock"
_LEGACY_CACHE = re.compile(r"cache\.(\d+)$")  # FileCache's directory, named for its worker's pid


class WorkDir:
    """A fresh ``wq-redis-worker-XXXX`` directory, locked as this process' until ``remove``."""

    def __init__(self, parent: str | None = None) -> None:
        self.path = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
        pending = os.path.join(self.path, f".{LOCK_NAME}.{os.getpid()}")
        self._lock_fd: int | None = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        os.rename(pending, os.path.join(self.path, LOCK_NAME))

    def remove(self) -> None:
        """Delete the directory and everything in it, then let go of the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def remove_orphans(parent: str | None = None) -> int:
    """Remove the work directories of dead workers in ``parent`` (default: the temporary
    directory); returns how many.  Never one a live worker holds; errors only skip."""
    parent = parent or tempfile.gettempdir()
    removed = 0
    try:
        names = [n for n in os.listdir(parent) if n.startswith(PREFIX)]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(parent, name)
        try:
            if _remove_if_orphaned(path):
                removed += 1
        except OSError as exc:  # another worker's sweep got there first, or not ours to remove
            log.debug("left %s alone: %s", path, exc)
    if removed:
        log.info("removed %d work director%s of dead workers in %s", removed, "y" if removed == 1 else "ies", parent)
    return removed


def _remove_if_orphaned(path: str) -> bool:
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        if not _legacy_owner_is_gone(path):
            return False
        shutil.rmtree(path)
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its worker is alive
        shutil.rmtree(path)  # holding the lock: no other sweep removes it meanwhile
        return True
    finally:
        os.close(fd)


def _legacy_owner_is_gone(path: str) -> bool:
    """A directory without a lock file: from a worker of an earlier version (whose file
    cache is ``cache.PID``), or one made a moment ago whose lock is not in place yet
    (nothing in it: left alone)."""
    owners = [int(m.group(1)) for m in map(_LEGACY_CACHE.match, os.listdir(path)) if m]
    if not owners:
        return False
    import psutil  # only for such directories (rare): a worker's start does without it

    changed = os.stat(path).st_mtime
    for pid in owners:
        try:
            if psutil.Process(pid).create_time() <= changed:
                return False  # alive, and old enough to be the owner
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:  # exists but cannot be inspected: assume it is the owner
            return False
    return True
