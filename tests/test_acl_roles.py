"""`wq-redis acl`: the users of each role, made with --apply on a Redis whose default user is
off, run the manager, workers (and a worker's lane), status and the exporter, and are
refused everything else (ACL DRYRUN: FLUSHALL, CONFIG, KEYS, another queue's keys; the
observer every write).  A command a role uses but protocol/acl.py does not grant fails
a test here: the run itself, or the ACL LOG, which records even a refusal the code
tolerates."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import redis
from conftest import Workers, drain
from helpers_tasks import my_sum

import wq_redis as wq
from wq_redis.embedded.server import RedisServer
from wq_redis.protocol.acl import acl_rules, key_patterns, script_commands
from wq_redis.protocol.lua import SCRIPT_NAMES, script_source

QUEUE = "acl-q"
ADMIN_PASSWORD = "admin-secret"


@dataclass
class LockedRedis:
    server: RedisServer
    admin: redis.Redis

    def url(self, user: str, password: str) -> str:
        return f"redis://{quote(user)}:{quote(password, safe='')}@127.0.0.1:{self.server.port}/0"


@pytest.fixture
def locked(monkeypatch: pytest.MonkeyPatch) -> Iterator[LockedRedis]:
    """A Redis with an admin user and the default user off: a client must log in as a user."""
    for name in ("WQ_REDIS_URL", "REDIS_URL", "WQ_ACL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    server = RedisServer().start()
    plain = redis.Redis(host="127.0.0.1", port=server.port)
    plain.execute_command("ACL", "SETUSER", "admin", "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all")
    plain.execute_command("ACL", "SETUSER", "default", "off")
    plain.close()
    admin = redis.Redis(host="127.0.0.1", port=server.port, username="admin", password=ADMIN_PASSWORD)
    yield LockedRedis(server, admin)
    admin.close()
    server.stop()


def wq_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wq_redis", *args], capture_output=True, text=True, timeout=60)


def make_user(locked: LockedRedis, role: str, password: str | None = None) -> tuple[str, str]:
    """The role's user made by `wq-redis acl --apply --json`; (its URL, its password)."""
    args = ["acl", "--queue", QUEUE, "--role", role, "--apply", "--json"]
    args += ["--redis-url", locked.url("admin", ADMIN_PASSWORD)]
    made = wq_command(*args, *(["--password", password] if password else []))
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    assert out["applied"] and out["user"] == f"wq-{QUEUE}-{role}"
    if password:
        assert "password" not in out and password not in made.stdout + made.stderr
    else:
        password = out["password"]
        assert len(password) >= 40
    assert password not in out["command"]  # only its hash
    return locked.url(out["user"], password), password


def refusals(locked: LockedRedis, user: str) -> list[dict[str, str]]:
    entries = locked.admin.acl_log()
    return [{k: str(e.get(k)) for k in ("reason", "object", "context")} for e in entries if e.get("username") == user]


def dryrun(locked: LockedRedis, user: str, *command: str) -> bool:
    """Whether ``user`` may run ``command`` (ACL DRYRUN: nothing runs)."""
    try:
        return locked.admin.execute_command("ACL", "DRYRUN", user, *command) == b"OK"
    except redis.ResponseError:  # an unknown command, say
        return False


def test_every_role_runs_with_only_its_own_commands_and_keys(locked: LockedRedis) -> None:
    manager_url, _ = make_user(locked, "manager", password="manager-pw-1")
    worker_url, _ = make_user(locked, "worker")
    observer_url, _ = make_user(locked, "observer")
    pool = Workers(worker_url, QUEUE)
    try:
        pool.start("--cores", "1")  # one slot: its lane runs the quick tasks
        pool.start("--cores", "2")
        with wq.WorkQueue(QUEUE, redis_url=manager_url) as q:
            q.specify_category_max_resources("small", {"cores": 1})
            for i in range(30):
                task = wq.PythonTask(my_sum, i, 1)
                task.specify_category("small")
                q.submit(task)
            command = wq.Task("cat in.txt")
            command.specify_buffer("hello", "in.txt", cache=True)
            q.submit(command)
            done = drain(q, 31, timeout=60)
            assert sorted(t.output for t in done if isinstance(t, wq.PythonTask)) == [i + 1 for i in range(30)]
            assert [t.output for t in done if not isinstance(t, wq.PythonTask)] == ["hello"]
            sleeper = q.submit(wq.Task("sleep 60"))
            assert q.cancel_by_taskid(sleeper) is not None
            assert q.stats.tasks_done >= 31
            status = wq_command("status", "--redis-url", observer_url, "--queue", QUEUE, "-W", "-T", "-A", "--json")
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["queues"][0]["workers"] == 2, (status.stdout, locked.admin.acl_log())
            found = wq_command("status", "--redis-url", observer_url, "--json")
            assert found.returncode == 0 and [x["name"] for x in json.loads(found.stdout)["queues"]] == [QUEUE]
            exported = wq_command("exporter", "--redis-url", observer_url, "--queue", QUEUE, "--json")
            assert exported.returncode == 0, exported.stderr
            assert f'queue="{QUEUE}"' in exported.stdout or QUEUE in exported.stdout
            assert q.shutdown_workers(0) == 2
    finally:
        pool.stop_all()
    assert refusals(locked, f"wq-{QUEUE}-manager") == []
    assert refusals(locked, f"wq-{QUEUE}-worker") == []
    # the exporter asks INFO for Redis' memory and goes without it: the one refusal allowed
    assert {e["object"] for e in refusals(locked, f"wq-{QUEUE}-observer")} <= {"info"}


@pytest.mark.parametrize("role", ["manager", "worker", "observer"])
def test_each_role_is_refused_the_rest(locked: LockedRedis, role: str) -> None:
    make_user(locked, role, password="pw")
    user = f"wq-{QUEUE}-{role}"
    assert dryrun(locked, user, "GET", f"wq:{{{QUEUE}}}:seq")
    assert dryrun(locked, user, "GET", f"wq:{{{QUEUE}|2}}:seq")  # a partition of a sharded queue
    assert not dryrun(locked, user, "FLUSHALL")
    assert not dryrun(locked, user, "FLUSHDB")
    assert not dryrun(locked, user, "CONFIG", "GET", "*")
    assert not dryrun(locked, user, "CONFIG", "SET", "appendonly", "no")
    assert not dryrun(locked, user, "KEYS", "*")
    assert not dryrun(locked, user, "DEBUG", "SLEEP", "0")
    assert not dryrun(locked, user, "ACL", "LIST")
    assert not dryrun(locked, user, "GET", "wq:{other}:seq")
    assert not dryrun(locked, user, "GET", f"wq:{{{QUEUE}x}}:seq")  # a queue whose name starts alike
    assert not dryrun(locked, user, "GET", "unrelated")
    own = f"wq:{{{QUEUE}}}:stats"
    writes = [("HSET", own, "x", "1"), ("DEL", own), ("LPUSH", f"wq:{{{QUEUE}}}:wake", "1"), ("SET", own, "1")]
    allowed = {write[0]: dryrun(locked, user, *write) for write in writes}
    if role == "observer":  # no write at all, not even through a script
        assert allowed == {"HSET": False, "DEL": False, "LPUSH": False, "SET": False}
        assert not dryrun(locked, user, "EVALSHA", "0" * 40, "1", own)
        assert dryrun(locked, user, "EVALSHA_RO", "0" * 40, "1", own)
    else:
        assert allowed == {"HSET": True, "DEL": True, "LPUSH": True, "SET": True}


def test_printed_rules_and_names_that_are_glob_patterns() -> None:
    printed = wq_command("acl", "--queue", "a*b", "--role", "observer", "--password", "pw-given")
    assert printed.returncode == 0 and "pw-given" not in printed.stdout + printed.stderr
    assert printed.stdout.startswith("ACL SETUSER 'wq-a*b-observer' reset '#")
    assert key_patterns("a*b") == ["wq:{a\\*b}:*", "wq:{a\\*b|*}:*"]
    rules = acl_rules("q", "observer")
    assert "%R~wq:{q}:*" in rules and not any(r.startswith("~") for r in rules)
    assert "+keys" not in rules and "+flushall" not in rules and "+evalsha" not in rules
    generated = wq_command("acl", "--queue", "q", "--role", "worker")
    assert generated.returncode == 0 and "shown once" in generated.stderr
    bad = wq_command("acl", "--queue", "a b", "--role", "worker")
    assert bad.returncode == 2 and "must not contain" in bad.stderr


def test_every_command_a_script_names_is_granted_to_the_roles_running_it(redis_url: str) -> None:
    """Every quoted upper-case word of a script that Redis knows as a command is found by
    script_commands: a new way of calling Redis in Lua cannot slip past the grants."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        commands = set(client.command_list())
        for name in SCRIPT_NAMES:
            words = set(re.findall(r"""['"]([A-Z]{2,})['"]""", script_source(name)))
            known = {w.lower() for w in words} & commands
            assert known <= script_commands(name), (name, known - script_commands(name))
    finally:
        client.close()
