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
import sys
import types
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
    """Pickle functions for the wire, once where that cannot change the result.

    A plain function of an importable module pickles *by reference* (its module and name),
    so its pickle is the same every time and is cached per function object.  Anything that
    pickles *by value* (lambdas, closures, functions of ``__main__``, callable objects)
    captures state that may change between submits, so it is pickled at every submit, as
    Work Queue does; identical bytes still get the same digest and are stored in Redis once.
    """

    def __init__(self) -> None:
        self._by_object: weakref.WeakKeyDictionary[Any, tuple[str, bytes]] = weakref.WeakKeyDictionary()

    def get(self, func: Callable[..., Any]) -> tuple[str, bytes]:
        if not _pickled_by_reference(func):
            return digest_pickle(func)
        cached = self._by_object.get(func)
        if cached is None:
            cached = self._by_object[func] = digest_pickle(func)
        return cached


def _pickled_by_reference(func: Any) -> bool:
    if not isinstance(func, types.FunctionType) or func.__closure__:
        return False
    module = getattr(func, "__module__", None)
    if not module or module == "__main__" or "<locals>" in func.__qualname__ or func.__name__ == "<lambda>":
        return False
    return getattr(sys.modules.get(module), func.__name__, None) is func


def digest_pickle(func: Callable[..., Any]) -> tuple[str, bytes]:
    body = cloudpickle.dumps(func)
    return hashlib.sha256(body).hexdigest(), body


def pickle_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    return cloudpickle.dumps((args, kwargs))
