"""Least-privilege Redis users (ACL, Redis 7+ and valkey): the keys and the commands each
role of a queue uses, and nothing else.

Roles: ``manager`` (``WorkQueue``: submits, retrieves, cancels, re-attaches),
``worker`` (``wq-redis worker``, its lane and local workers: claims, renews, completes,
hands back) and ``observer`` (``wq-redis status`` and the exporter: reads only).

Keys: every key of queue NAME starts with ``wq:{NAME}:`` (keys.py); the partitions of a
queue spread over the shards of a cluster are ``wq:{NAME|N}:`` (``|`` is refused in
queue names, so the pattern of NAME's partitions matches no other queue's keys; a plain
``wq:{NAME*`` would match queue ``NAMEx`` too).  Glob characters in NAME are escaped.
The observer's keys are read-only (``%R~``), so it cannot write even through a script.

Commands: a script's own commands count, as Redis checks each command a script runs
against the caller's user; they are read from the scripts' sources (``script_commands``:
``redis.call``, ``redis.pcall`` and the ``read`` wrapper of include/broken.lua), so a script
that starts using a command grants it to the roles that run that script
(tests/test_acl_roles.py checks that every command named in a script is found).  The
observer's scripts share a fragment that can repair a broken key (LPUSH, LTRIM): granted,
but its keys are read-only and its scripts run by EVALSHA_RO, so it never writes.
Outside scripts, each role's direct commands are listed below, from the calls in
manager_calls.py, worker_calls.py, worker_control.py, views.py, pipeline.py, store.py,
and the client's and exporter's own (tests/test_acl_roles.py runs every role against a
Redis whose default user is off, so a command missing here fails it).  Granted to none:
KEYS, FLUSHALL/FLUSHDB, CONFIG, DEBUG, SHUTDOWN, INFO (the exporter's memory gauge is
left out for a user without it), ACL, MODULE, Pub/Sub channels.  SCAN is granted to the
manager (re-attaching finds its queue's task hashes) and the observer (finding queues
when none is named): it shows key names, never their contents.
"""

from __future__ import annotations

import re

from .keys import PARTITION_SEPARATOR, QueueKeys
from .lua import script_source

ROLES = ("manager", "worker", "observer")

# Every connection: redis-py's handshake (AUTH, HELLO, SELECT for a database other than
# 0, CLIENT SETINFO with its name and version), our CLIENT SETNAME, and PING (checks).
CONNECTION_COMMANDS = ("auth", "hello", "select", "client|setname", "client|setinfo", "ping")

# Which scripts each role runs (by EVALSHA; SCRIPT LOAD first; the read-only ones by
# EVALSHA_RO, or EVAL_RO when not loaded yet).
ROLE_SCRIPTS = {
    "manager": ("attach", "reserve", "label", "submit", "retrieve", "cancel", "shutdown", "stats", "export"),
    "worker": ("claim", "renew", "complete", "release", "escalate", "reap"),
    "observer": ("stats", "export"),
}
READ_ONLY_SCRIPTS = ("stats", "export")

# Commands each role sends outside scripts.
ROLE_COMMANDS = {
    "manager": (
        "evalsha",
        "script|load",
        "evalsha_ro",
        "eval_ro",
        "blpop",  # waiting for completions (done:wake)
        "lpush",  # ringing wake-up lists (pipeline.ring)
        "ltrim",
        "set",  # functions and input files (SET EX), the incarnation
        "get",
        "expire",
        "hget",
        "hgetall",
        "hmget",
        "hset",
        "hincrby",
        "hdel",
        "del",
        "lrange",
        "zrange",
        "smembers",
        "scan",  # re-attaching: the queue's task hashes
        "time",
    ),
    "worker": (
        "evalsha",
        "script|load",
        "blpop",  # waiting for work
        "lpush",
        "ltrim",
        "get",  # functions and input files
        "set",  # large values (SET EX)
        "strlen",
        "type",
        "hget",
        "hset",
        "hgetall",
        "hdel",
        "zrange",
        "zrem",
        "del",
        "time",
    ),
    "observer": (
        "evalsha_ro",
        "eval_ro",
        "get",
        "type",
        "hgetall",
        "hmget",
        "lrange",
        "zrange",
        "smembers",
        "srandmember",  # a sample of the tasks being retrieved (views.py)
        "scan",  # finding queues when none is named
        "time",
    ),
}

# redis.call('CMD', ...), redis.pcall('CMD', ...), and include/broken.lua's read(DEFAULT, 'CMD', ...)
_CALL = re.compile(r"""(?:\bredis\.p?call\(|\bread\(\s*[^,()'"]*,)\s*['"]([A-Za-z]+)['"]""")
_GLOB = re.compile(r"([*?\[\]\\])")


def script_commands(name: str) -> set[str]:
    """The commands script ``name`` runs (its included fragments too), lower case."""
    return {command.lower() for command in _CALL.findall(script_source(name))}


def role_commands(role: str) -> list[str]:
    """Every command ``role`` needs, sorted: its direct ones, its scripts', the connection's."""
    check_role(role)
    commands = set(CONNECTION_COMMANDS) | set(ROLE_COMMANDS[role])
    for script in ROLE_SCRIPTS[role]:
        commands |= script_commands(script)
    return sorted(commands)


def key_patterns(queue: str) -> list[str]:
    """Glob patterns of queue ``queue``'s keys and of its partitions' keys."""
    QueueKeys(queue)  # a name the key schema takes
    escaped = _GLOB.sub(r"\\\1", queue)
    return [f"wq:{{{escaped}}}:*", f"wq:{{{escaped}{PARTITION_SEPARATOR}*}}:*"]


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def acl_rules(queue: str, role: str) -> list[str]:
    """The ``ACL SETUSER`` rules (after the user name and its password) of ``role`` for
    ``queue``: everything reset first, so applying them again narrows an existing user."""
    check_role(role)
    access = "%R~" if role == "observer" else "~"
    rules = ["reset", "on", "resetchannels"]
    rules += [access + pattern for pattern in key_patterns(queue)]
    rules += ["-@all"] + ["+" + command for command in role_commands(role)]
    return rules
