"""Running our scripts: many calls in one round trip on a connection of redis-py's pool,
without redis-py's pipeline (see ``ScriptPipeline._round_trip``).  The base of the
store's manager and worker calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from .answers import Call
from .cluster import queue_client
from .durability import Durability
from .keys import QueueKeys
from .lua import SCRIPT_NAMES, load_script

# Refusals of a server that takes no writes for now, where waiting helps (another server
# is being promoted, a replica reconnects): a master demoted under a plain redis:// URL
# (READONLY; a BLPOP it was serving ends UNBLOCKED), one with min-replicas-to-write and
# too few replicas (NOREPLICAS), a replica cut from its master (MASTERDOWN).  A refused
# call wrote nothing (Redis refuses a script at its first write, before any), and each
# of ours is safe to send again.
NOT_WRITABLE_CODES = ("READONLY", "NOREPLICAS", "MASTERDOWN", "UNBLOCKED")


def not_writable(error: BaseException) -> bool:
    """Whether Redis refused a call only because it takes no writes now (see
    NOT_WRITABLE_CODES): an outage to ride out, as a lost connection is."""
    if isinstance(error, (redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError)):
        return True  # redis-py strips the code from these messages
    if not isinstance(error, redis.ResponseError):
        return False
    # the reply's code; redis-py's pipelines put "Command # n (...) of pipeline caused
    # error: " before the message
    return getattr(error, "status_code", None) in NOT_WRITABLE_CODES or str(error).startswith(NOT_WRITABLE_CODES)


def outage(error: BaseException) -> bool:
    """Whether ``error`` is an outage of Redis (unreachable, or not writable now) rather
    than a refusal that retrying would only repeat."""
    return isinstance(error, (redis.ConnectionError, redis.TimeoutError)) or not_writable(error)


def described(error: BaseException) -> str:
    """``error`` for an outage's log line: redis-py drops READONLY's code from its text."""
    if isinstance(error, redis.exceptions.ReadOnlyError):
        return f"READONLY {error} (a replica: was the master demoted? a redis+sentinel:// URL follows the master)"
    return str(error)


def wrong_type(error: Exception) -> bool:
    """Whether Redis refused a call because a key holds another type (another client's garbage)."""
    return str(error).startswith("WRONGTYPE")


class ScriptPipeline:
    """A queue's keys, its scripts registered with ``client``, and the round trips that
    run them."""

    def __init__(
        self, client: redis.Redis, queue: str, one_thread: bool = False, durability: str = "none", part: int = 0
    ) -> None:
        """``one_thread``: only one thread ever uses this store; its round trips then keep
        one connection of their own instead of taking one from the pool each time (which
        polls the socket: a system call per round trip).  ``durability``: see durability.py
        (a server that cannot give it raises ``DurabilityUnavailable`` here).  ``part``:
        partition ``part`` of a sharded queue (partitions.py)."""
        self.keys = QueueKeys(queue, part)
        # on Redis Cluster: a client of the primary that owns the queue's slot (cluster.py)
        client = queue_client(client, self.keys.prefix)
        self.durability = Durability.of(durability)
        if self.durability is not None:
            self.durability.check_server(client)
        self.client = client
        self._scripts = {name: load_script(client, name) for name in SCRIPT_NAMES}
        self._scripts_loaded = False  # in Redis: loaded before the first pipeline
        self._one_thread = one_thread
        self._own: Any = None  # that connection, once made
        self._broken_wake: dict[str, float] = {}  # wake keys of the wrong type -> when found (monotonic)

    def _ring(self, keys: list[str]) -> None:
        """Ring wake-up lists (a token each, at most one kept: as ``ring`` in
        scripts/include/broken.lua), in one round trip; a key of another type is skipped."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, 0)
        pipe.execute(raise_on_error=False)

    def close_idle_connections(self) -> None:
        """Close the connections no call of this store uses now (they open again when one
        is needed).  Each costs Redis about 20 KB of buffers: an idle worker keeps only the
        ones it waits on (issue 17: at most two).  A ``one_thread`` store's own connection
        is closed too (its thread is the caller)."""
        self.client.connection_pool.disconnect(inuse_connections=False)
        if self._own is not None:
            self._own.disconnect()

    def _call_many(self, name: str, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run one script many times in one pipeline (one round trip)."""
        return self._pipeline([(name, keys, args) for keys, args in calls])

    def _pipeline(
        self,
        calls: Sequence[Call],
        early: tuple[int, Callable[[list[Any]], None]] | None = None,
    ) -> list[Any]:
        """Run scripts in one pipeline (one round trip); answers in order.

        Sends EVALSHA directly: redis-py's pipelines would first ask SCRIPT EXISTS, a second
        round trip on every call.  Every script is loaded before this store's first
        pipeline, so that none of its calls finds its script missing while a later one runs
        (a retrieve answered before the submit it was sent after).  Calls answered NOSCRIPT
        all the same (Redis restarted or flushed its scripts) did not run: every script is
        loaded again, and those calls are sent again with the retrieves after them (a
        retrieve is safe to repeat; the others did not depend on them).  With a durability
        level, its WAIT goes right after the last submit or completion (durability.py).

        ``early``: (n, callback) calls back with the first n answers as soon as they are read
        (on the first try only), while later calls may still block.
        """
        if not self._scripts_loaded:
            self._load_scripts()
        wait_at = None if self.durability is None else self.durability.insert(list(calls))
        if wait_at is not None:  # the WAIT of the durability level, after the last submit or completion
            calls = [*calls[:wait_at], ("wait", [], []), *calls[wait_at:]]
            if early is not None and early[0] >= wait_at:
                told = early[1]
                early = (early[0] + 1, lambda answers: told(answers[:wait_at] + answers[wait_at + 1 :]))
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):
            commands: list[tuple[Any, ...]] = []
            for index in todo:
                name, keys, args = calls[index]
                if name == "set":  # a large value, beside a script that refers to it
                    commands.append(("SET", keys[0], args[0], "EX", args[1]))
                elif name == "blpop":  # an idle worker waits, then its claim runs at once
                    commands.append(("BLPOP", *keys, args[0]))
                elif name == "get":  # a small key read in the same round trip (a heartbeat's shard count)
                    commands.append(("GET", keys[0]))
                elif name == "wait":
                    commands.append(self.durability.command)  # type: ignore[union-attr]  # a "wait" call exists only with a level
                else:
                    commands.append(("EVALSHA", self._scripts[name].sha, len(keys), *keys, *args))
            answers = self._round_trip(commands, early if len(todo) == len(calls) else None)
            retry = []
            for index, answer in zip(todo, answers):
                if isinstance(answer, redis.exceptions.NoScriptError):
                    retry.append(index)
                elif (
                    isinstance(answer, redis.ResponseError)
                    and calls[index][0] in ("blpop", "get")
                    and wrong_type(answer)
                ):
                    results[index] = answer  # a wake key (a key read) of the wrong type: the calls after it still count
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    results[index] = answer
            if not retry:
                if wait_at is not None:
                    self.durability.check(results.pop(wait_at))  # type: ignore[union-attr]  # wait_at is set only with a level
                return results
            self._load_scripts()
            todo = [
                index
                for index in todo
                if index in retry or (index > retry[0] and calls[index][0] in ("retrieve", "wait"))
            ]
        raise RuntimeError("scripts could not be loaded into Redis")

    def _round_trip(
        self, commands: list[tuple[Any, ...]], early: tuple[int, Callable[[list[Any]], None]] | None = None
    ) -> list[Any]:
        """Send ``commands`` at once and read their answers (an error reply is its
        exception, in its place).  What redis-py's pipeline does, without the per-command
        bookkeeping that was a fifth of a task's Python on each side of a round trip:
        our calls need no response callbacks.  A dropped connection is retried as the
        client's retry policy says, on a fresh connection, with every command again (each
        of ours is safe to repeat: see the scripts' headers)."""
        pool = self.client.connection_pool
        conn = self._own if self._own is not None else pool.get_connection()
        if self._one_thread:
            self._own = conn

        def send_and_read() -> list[Any]:
            conn.send_packed_command(conn.pack_commands(commands))
            answers: list[Any] = []
            for _ in commands:
                if early is not None and len(answers) == early[0]:
                    early[1](answers)
                try:
                    answers.append(conn.read_response())
                except redis.ResponseError as exc:
                    answers.append(exc)
            return answers

        try:
            return conn.retry.call_with_retry(send_and_read, lambda _error: conn.disconnect())
        except BaseException:
            conn.disconnect()  # answers may be left unread: never use this socket again
            raise
        finally:
            if conn is not self._own:
                pool.release(conn)

    def _load_scripts(self) -> None:
        """Load every script (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for script in self._scripts.values():
            pipe.script_load(script.script)
        for script, sha in zip(self._scripts.values(), pipe.execute()):
            script.sha = sha
        self._scripts_loaded = True

    def _read_only(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """A read-only script (flagged ``no-writes``) by EVALSHA_RO: a user with read-only
        access to the queue's keys may run it (EVALSHA counts its keys as written), and a
        replica serves it.  Not loaded yet (or Redis restarted): EVAL_RO, which loads it,
        so such a user needs no SCRIPT LOAD either."""
        script = self._scripts[name]
        try:
            return self.client.evalsha_ro(script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self.client.eval_ro(script.script, len(keys), *keys, *args)
