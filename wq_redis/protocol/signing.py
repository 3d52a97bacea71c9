"""Signed tasks and results (HMAC-SHA256), for queues whose Redis others can write to.

With a shared secret (``WorkQueue(..., secret=...)``, ``wq-redis worker --secret``, or
``WQ_REDIS_SECRET`` for both), the manager signs what a worker will unpickle (the spec,
the function digest, the arguments, the input files) and the worker signs what the
manager will unpickle (the return value).  Each side checks the signature *before*
unpickling anything and refuses, with a clear message, what does not verify.  Function
bodies and cached inputs are content-addressed: the worker checks their SHA-256 against
the signed digest.  The key id (a short hash of the secret) names the key, so a refusal
says which one.

A task's signature covers every field the worker reads to build what it runs or
unpickles (``SIGNED_FIELDS`` and the input fields), each one's presence included: a field
added to a signed hash (a pack's ``n`` and ``pa``, arguments where there were none)
breaks the signature as surely as a field changed.  Large fields kept beside the hash
(``big``) are put back before the check, so it covers the bytes actually read.  Packs are
never signed (a manager with a secret does not pack), so no pack verifies on a worker
with a secret, and a manager with a secret never reads one (``store.retrieve``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from .fields import (
    ARGS_B,
    CACHED_COMMAND_FILE_B,
    CACHED_DIR_B,
    CACHED_FILE_B,
    CACHED_URL_FILE_B,
    COMMAND_FILE_B,
    FUNCTION_B,
    INLINE_DIR_B,
    INLINE_FILE_B,
    INPUT_MODE_B,
    PACK_ARGS_B,
    PACK_SIZE_B,
    SIGNATURE_B,
    SPEC_B,
    URL_FILE_B,
)

# What the worker reads of a task hash to build what it runs and unpickles: the spec
# (kind, command, env, files, limits), the function digest, the arguments, and a pack's
# member count and members (id, arguments) (packing.py).
SIGNED_FIELDS = (SPEC_B, FUNCTION_B, ARGS_B, PACK_SIZE_B, PACK_ARGS_B)
SIGNED_PREFIXES = (
    INLINE_FILE_B,
    CACHED_FILE_B,
    INLINE_DIR_B,
    CACHED_DIR_B,
    INPUT_MODE_B,
    URL_FILE_B,
    CACHED_URL_FILE_B,
    COMMAND_FILE_B,
    CACHED_COMMAND_FILE_B,
)  # inputs: inline, cached (digest), directories, modes, URLs and file commands
DOMAIN_TASK = b"wq-redis task v2"  # v2: the queue, each field's presence and the pack fields signed
_PRESENT, _ABSENT = b"\x01", b"\x00"
DOMAIN_RESULT = b"wq-redis result v2"  # v2: the queue signed


class SignatureError(ValueError):
    """A task or result whose signature is missing or does not verify."""


def secret_from(value: str | bytes | None) -> bytes | None:
    """The secret given, else ``WQ_REDIS_SECRET``, else None (unsigned)."""
    if value is None:
        value = os.environ.get("WQ_REDIS_SECRET") or None
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)


class Signer:
    """Signs and checks the tasks and results of one queue.

    The queue's name is part of every signature: queues that share a secret (one Redis,
    one team) cannot replay each other's signed tasks or results (task 5 of queue A copied
    to task 5 of queue B does not verify there)."""

    def __init__(self, secret: bytes, queue: str) -> None:
        if not secret:
            raise ValueError("the signing secret must not be empty")
        self._secret = secret
        self._queue = queue.encode()
        self.secret = secret  # what this queue's workers are given (WQ_REDIS_SECRET) to verify its tasks
        self.key_id = hashlib.sha256(b"wq-redis key id" + secret).hexdigest()[:12]

    def _mac(self, parts: list[bytes]) -> str:
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return f"{self.key_id}:{mac.hexdigest()}"

    # -- tasks (manager signs, worker verifies) ---------------------------------------
    def _task_parts(self, task_id: int, fields: Mapping[bytes, bytes]) -> list[bytes]:
        parts = [DOMAIN_TASK, self._queue, str(task_id).encode()]
        for name in SIGNED_FIELDS:
            value = fields.get(name)
            # (each part is length-prefixed by _mac: a marker then the value, or a marker alone)
            parts += [name, _ABSENT] if value is None else [name, _PRESENT, value]
        for name in sorted(k for k in fields if k.startswith(SIGNED_PREFIXES)):
            parts += [name, hashlib.sha256(fields[name]).digest()]
        return parts

    def sign_task(self, task_id: int, fields: Mapping[bytes, bytes]) -> str:
        return self._mac(self._task_parts(task_id, fields))

    def verify_task(self, task_id: int, fields: Mapping[bytes, bytes]) -> None:
        self._verify(fields.get(SIGNATURE_B), self._task_parts(task_id, fields), "task")

    # -- results (worker signs, manager verifies) -------------------------------------
    def sign_result(self, task_id: int, value: bytes) -> str:
        return self._mac([DOMAIN_RESULT, self._queue, str(task_id).encode(), value])

    def verify_result(self, task_id: int, value: bytes, signature: bytes | None) -> None:
        self._verify(signature, [DOMAIN_RESULT, self._queue, str(task_id).encode(), value], "result")

    def _verify(self, signature: bytes | None, parts: list[bytes], what: str) -> None:
        if not signature:
            raise SignatureError(f"{what} is not signed, but this side requires signatures (key {self.key_id})")
        given = signature.decode(errors="replace")
        key_id = given.partition(":")[0]
        if key_id != self.key_id:
            raise SignatureError(f"{what} is signed with key {key_id}, this side has key {self.key_id}")
        if not hmac.compare_digest(given, self._mac(parts)):
            raise SignatureError(f"{what} signature does not verify (key {self.key_id}): refused before unpickling")


def verify_function_body(digest: str, body: bytes) -> None:
    """A function body must hash to the digest the (signed) task names."""
    if hashlib.sha256(body).hexdigest() != digest:
        raise SignatureError(f"function body does not match its digest {digest[:12]}: refused before unpickling")
