"""``wq-redis acl``: a Redis ACL user for one role of one queue (protocol/acl.py says which
keys and commands), printed as an ``ACL SETUSER`` command or, with ``--apply``, created.

Passwords: the rules carry the password's SHA-256 (``#HEX``), never the password, so the
printed command, shell history and Redis' ``ACL LIST`` hold nothing to log in with.  A
password given (``--password`` or ``WQ_ACL_PASSWORD``) is never printed; without one a
strong one is generated and printed once (the user is useless without it): store it then.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shlex
from typing import Any

import click

from .params import REDIS_URL_ENV, tls_options

PASSWORD_BYTES = 32  # secrets.token_urlsafe(32): 256 bits, 43 characters


def user_rules(queue: str, role: str, password: str) -> list[str]:
    """``acl_rules`` with the password's hash after the reset."""
    from ..protocol.acl import acl_rules

    rules = acl_rules(queue, role)
    return rules[:1] + ["#" + hashlib.sha256(password.encode()).hexdigest()] + rules[1:]


@click.command("acl")
@click.option("--queue", "-M", envvar="WQ_QUEUE", required=True, help="The queue whose keys the user may touch.")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["manager", "worker", "observer"]),
    help="manager: WorkQueue; worker: wq-redis worker; observer: status and exporter (reads only).",
)
@click.option("--user", help="User name [default: wq-QUEUE-ROLE].")
@click.option(
    "--password",
    envvar="WQ_ACL_PASSWORD",
    help="The user's password (env WQ_ACL_PASSWORD; never printed) [default: a generated one, printed once].",
)
@click.option(
    "--apply",
    is_flag=True,
    help="Create (or narrow) the user on the Redis at --redis-url, as a user allowed ACL SETUSER; "
    "ACL SAVE (aclfile) or CONFIG REWRITE keeps it across restarts.",
)
@click.option("--redis-url", "--redis", envvar=REDIS_URL_ENV, help="Redis URL for --apply (env WQ_REDIS_URL).")
@click.option("--json", "as_json", is_flag=True, help="Print user, rules, command (and a generated password) as JSON.")
@tls_options
def acl_command(
    queue: str,
    role: str,
    user: str | None,
    password: str | None,
    apply: bool,
    redis_url: str | None,
    as_json: bool,
) -> None:
    """Print (or with --apply create) a Redis ACL user for ROLE of QUEUE: the queue's keys
    only, the commands that role uses only (Redis 7+ or valkey)."""
    try:
        from ..protocol.keys import check_queue_name

        check_queue_name(queue)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    name = user or f"wq-{queue}-{role}"
    generated = password is None
    secret = password if password is not None else secrets.token_urlsafe(PASSWORD_BYTES)
    rules = user_rules(queue, role, secret)
    command = ["ACL", "SETUSER", name, *rules]
    if apply:
        _apply(redis_url, command)
    out: dict[str, Any] = {"user": name, "queue": queue, "role": role, "rules": rules, "applied": apply}
    out["command"] = shlex.join(command)
    if generated:
        out["password"] = secret
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if not apply:
        click.echo(out["command"])
    else:
        click.echo(f"user {name} set ({role} of queue {queue})")
    if generated:
        click.echo(f"password of {name} (generated; shown once, store it now): {secret}", err=True)


def _apply(redis_url: str | None, command: list[str]) -> None:
    import redis

    from ..protocol.connection import RedisUnavailable, open_client, safe_url

    if not redis_url:
        raise click.UsageError("--apply needs --redis-url (or WQ_REDIS_URL): a user allowed ACL SETUSER")
    try:
        client = open_client(redis_url)
    except (RedisUnavailable, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError as exc:
        raise click.ClickException(f"the user of {safe_url(redis_url)} may not create users: {exc}") from None
    except redis.ResponseError as exc:
        raise click.ClickException(
            f"ACL SETUSER failed at {safe_url(redis_url)} (Redis 7+ or valkey?): {exc}"
        ) from None
    finally:
        client.close()
