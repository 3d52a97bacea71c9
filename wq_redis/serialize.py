"""Envelopes for task specs, and the per-manager cache of pickled functions.

A task's spec (command, resources, files, limits) travels as a small versioned envelope:
``b"WQ" + version byte + JSON``.  Binary payloads (pickled arguments, function bodies,
input files, results) travel as raw bytes in their own hash fields, never base64 or JSON
wrapped.  The version byte lets a worker refuse, with a clear message, a task written by
an incompatible manager instead of misreading it.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import Any, Callable

import cloudpickle

MAGIC = b"WQ"
VERSION = 1


class EnvelopeError(ValueError):
    """A task payload that cannot be decoded (truncated, foreign, or a newer version)."""


def pack_spec(spec: dict[str, Any]) -> bytes:
    return MAGIC + bytes([VERSION]) + json.dumps(spec, separators=(",", ":")).encode()


def unpack_spec(data: bytes | None) -> dict[str, Any]:
    if not data or len(data) < 3 or data[:2] != MAGIC:
        raise EnvelopeError("task spec is missing or not a wq-redis envelope")
    if data[2] != VERSION:
        raise EnvelopeError(f"task spec has envelope version {data[2]}, this worker reads {VERSION}")
    try:
        spec = json.loads(data[3:])
    except ValueError as exc:
        raise EnvelopeError(f"task spec is truncated or corrupt: {exc}") from None
    if not isinstance(spec, dict) or "kind" not in spec:
        raise EnvelopeError("task spec has no 'kind'")
    return spec


class FunctionCache:
    """Pickle each function once per manager and name it by the SHA-256 of its pickle.

    Keyed by the function object itself (weakly), so a function used by a million tasks is
    pickled once.  As with Ray's remote functions, globals a function reads are captured
    when it is first pickled.
    """

    def __init__(self) -> None:
        self._by_object: weakref.WeakKeyDictionary[Any, tuple[str, bytes]] = weakref.WeakKeyDictionary()

    def get(self, func: Callable[..., Any]) -> tuple[str, bytes]:
        try:
            cached = self._by_object.get(func)
        except TypeError:  # not weak-referenceable (e.g. a builtin): pickle each time
            return digest_pickle(func)
        if cached is None:
            cached = digest_pickle(func)
            try:
                self._by_object[func] = cached
            except TypeError:
                pass
        return cached


def digest_pickle(func: Callable[..., Any]) -> tuple[str, bytes]:
    body = cloudpickle.dumps(func)
    return hashlib.sha256(body).hexdigest(), body


def pickle_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    return cloudpickle.dumps((args, kwargs))
