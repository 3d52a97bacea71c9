"""Running a simple command task without ``/bin/sh``, exactly as dash would run it.

A command task is ``/bin/sh -c COMMAND``.  Debian's ``/bin/sh`` is dash, which forks and
waits for even the last command of ``-c`` (it does not exec it), so ``Task("/bin/true")``
costs a shell start plus a fork and an exec; executing the program directly costs about
half.  This module decides when that is safe and reproduces what the shell would have done:

* the command is a *simple* one: words of plain characters (letters, digits, ``_./:,+%@=-``)
  separated by spaces or tabs, so no quoting, expansion, globbing, redirection, comment or
  operator can apply and the words are the argv; the first word is no assignment, keyword
  or builtin, and is found in ``$PATH`` the way dash finds it (or contains a ``/``);
* the environment is the one dash passes on: only variables with names that are shell
  identifiers, and ``PWD`` set to the working directory (dash always exports it);
* a program killed by signal N is reported as dash reports it: exit status 128+N, with
  dash's message (``strsignal``, " (core dumped)") after its output, except for SIGINT
  and SIGPIPE, about which dash says nothing;
* when the exec fails (not found, not executable, not a binary nor a ``#!`` script),
  the caller runs the command through the shell after all, which says why as it always did.

Differences left: the order of the variables in the environment block (dash's follows its
hash table); and a signal sent to the task's whole process group (``kill 0`` in a script's
exit trap, or ``kill -TERM -PGID`` from outside) also killed the waiting dash, which made
the result SIGNAL N, where the program alone now reads as exit status 128+N, as it would
had only the program been signalled (a crash, an abort, the OOM killer, a CPU limit).
Where ``/bin/sh`` is not dash (bash execs the last command of ``-c`` itself, and has other
builtins), every command goes through the shell.
"""

from __future__ import annotations

import os
import re
import signal
import stat

SHELL = "/bin/sh"
SIMPLE = re.compile(r"[ \t]*[A-Za-z0-9_./:,+%@=-]+(?:[ \t]+[A-Za-z0-9_./:,+%@=-]+)*[ \t]*")
# dash 0.5's builtins and keywords (`type WORD` for each): these never exec a program
DASH_WORDS = frozenset(
    ". : [ alias bg break cd chdir command continue echo eval exec exit export false fg getopts hash jobs kill "
    "local printf pwd read readonly return set shift test times trap true type ulimit umask unalias unset wait "
    "case do done elif else esac fi for if in then until while".split()
)
QUIET_SIGNALS = (signal.SIGINT, signal.SIGPIPE)  # dash prints no message for these
SIGNALLED_STATUS_BASE = 128  # a shell reports a program killed by signal N as exit status 128+N


def _shell_is_dash() -> bool:
    try:
        return os.path.basename(os.path.realpath(SHELL)) == "dash"
    except OSError:
        return False


DIRECT = _shell_is_dash()


def direct_argv(command: str, env: dict[str, str], cwd: str) -> tuple[str, list[str]] | None:
    """(program path, argv) when ``command`` can run without the shell in ``cwd``, else None."""
    if not DIRECT or not SIMPLE.fullmatch(command):
        return None
    argv = command.split()
    first = argv[0]
    if "=" in first:  # an assignment
        return None
    if "/" in first:
        return first, argv
    if first in DASH_WORDS:
        return None
    path = _lookup(first, env.get("PATH"), cwd)
    return None if path is None else (path, argv)


def _lookup(name: str, search: str | None, cwd: str) -> str | None:
    """The first regular file named ``name`` in the search path, as dash looks for it;
    None when there is none, or the path is unset or uses dash's ``%`` entries (the shell
    then speaks for itself)."""
    if search is None or "%" in search:
        return None  # dash has its own default path, and %builtin entries
    for directory in search.split(":"):
        candidate = os.path.join(cwd, directory, name)  # relative entries: from the task's directory
        try:
            if stat.S_ISREG(os.stat(candidate).st_mode):
                # dash execs the first regular file; when that exec fails the caller
                # falls back to the shell, which tries the rest of the path
                return candidate
        except OSError:
            pass
    return None


def shell_environment(env: dict[str, str], cwd: str) -> dict[str, str]:
    """The environment dash would give the command: identifiers only, ``PWD`` = cwd."""
    out = {k: v for k, v in env.items() if k.isidentifier() and k.isascii()}  # [A-Za-z_][A-Za-z0-9_]*
    pwd = out.get("PWD")
    if not (pwd and pwd.startswith("/") and _same_directory(pwd, cwd)):
        out["PWD"] = os.path.realpath(cwd)  # what getcwd() says, as dash does
    return out


def _same_directory(a: str, b: str) -> bool:
    try:
        x, y = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def as_shell_reports(wait_status: int) -> tuple[int, bytes]:
    """Exit status and stderr message dash gives for a child that ended this way."""
    if not os.WIFSIGNALED(wait_status):
        return os.waitstatus_to_exitcode(wait_status), b""
    number = os.WTERMSIG(wait_status)
    if number in QUIET_SIGNALS:
        return SIGNALLED_STATUS_BASE + number, b""
    try:
        text = signal.strsignal(number) or f"Unknown signal {number}"
    except ValueError:
        text = f"Unknown signal {number}"
    if os.WCOREDUMP(wait_status):
        text += " (core dumped)"
    return SIGNALLED_STATUS_BASE + number, text.encode() + b"\n"


_ENVIRON: tuple[dict[bytes, bytes], dict[str, str]] = ({}, {})


def worker_environment() -> dict[str, str]:
    """A copy of ``os.environ`` as a plain dict, decoded once and again only after it
    changed (iterating ``os.environ`` decodes every variable, every time)."""
    global _ENVIRON
    data = getattr(os.environ, "_data", None)  # what os.putenv/unsetenv keep: bytes -> bytes
    if not isinstance(data, dict):
        return dict(os.environ)
    cached, decoded = _ENVIRON
    if data != cached:
        decoded = dict(os.environ)
        _ENVIRON = dict(data), decoded
    return dict(decoded)
