"""The directory a warm child runs a batch's calls in, emptied after each call."""

from __future__ import annotations

import os
import time


class Sandbox:
    """The batch sandbox of this child, emptied after each call that left something in it.

    Held open as a directory descriptor: entering it (``fchdir``) and checking it
    (``fstat``) then cost no path lookup, which was a third of a short call's time here.
    Whether a call left something is told by the directory's modification time, one
    fstat instead of a listing; a time within the file system's clock granularity of the
    last emptying cannot tell (a file made in the same tick leaves it unchanged), so then
    it is listed.
    """

    SETTLED_SECONDS = 0.05  # coarser than any file system's timestamp tick

    def __init__(self) -> None:
        self.path = ""
        self.fd = -1
        self.clean_mtime = -1

    def use(self, path: str) -> None:
        if path != self.path:
            self._close()
            self.path, self.clean_mtime = path, -1

    def enter(self) -> None:
        """Make the sandbox the working directory (again: a call may have moved away)."""
        if self.fd < 0:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        os.fchdir(self.fd)

    def empty(self) -> None:
        if self.fd < 0:
            return
        try:
            stat = os.fstat(self.fd)
        except OSError:
            return
        if stat.st_nlink == 0:  # a call removed the sandbox: the next one opens it by path
            self._close()
            return
        mtime = stat.st_mtime_ns
        if mtime == self.clean_mtime and time.time_ns() - mtime > self.SETTLED_SECONDS * 1e9:
            return
        _empty(self.path)
        try:
            self.clean_mtime = os.fstat(self.fd).st_mtime_ns
        except OSError:
            self.clean_mtime = -1

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _empty(path: str) -> None:
    """Remove what a call left in the batch's sandbox, so the next call starts clean."""
    try:
        leftovers = os.listdir(path)
    except OSError:
        return
    for name in leftovers:
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            import shutil  # here: a directory left behind is rare, and shutil is 1 ms of the child's start

            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.unlink(full)
            except OSError:
                pass
