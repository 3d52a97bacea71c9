"""Envelopes for task specs, and the per-manager cache of pickled functions.

A task's spec (command, resources, files, limits) travels as a small versioned envelope:
``b"WQ" + version byte + JSON``.  Binary payloads (pickled arguments, function bodies,
input files, results) travel as raw bytes in their own hash fields, never base64 or JSON
wrapped.  The version byte lets a worker refuse, with a clear message, a task written by
an incompatible manager instead of misreading it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import sys
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

MAGIC = b"WQ"
VERSION = 1

# What a task hash may leave out, because it is the default: one place, read by the
# manager (task_from_fields) and by the worker (TaskRun, through ``worker_view``).
DEFAULT_PY_SPEC: dict[str, Any] = {"kind": "py", "command": "python"}  # a PythonTask that specifies nothing
# cloudpickle's DEFAULT_PROTOCOL: built-in data pickles to the same bytes with either
# pickler.  cloudpickle itself is imported where a function or an object is pickled (the
# manager): a worker's main process reads these envelopes and never loads it.
PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
NO_ARGS = pickle.dumps(((), {}), protocol=PICKLE_PROTOCOL)  # the arguments of a call without any


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
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(f"task spec is truncated or corrupt: {exc}") from None
    if not isinstance(spec, dict) or "kind" not in spec:
        raise EnvelopeError("task spec has no 'kind'")
    return spec


def task_spec(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """The spec of a task hash: its envelope, or, when it has none but names a function,
    the default PythonTask spec (the manager leaves defaults out of the hash).  What a
    worker reads of it is checked here (``check_spec``): any other client may write a hash."""
    data = fields.get(b"spec")
    if data is None and fields.get(b"fn"):
        return dict(DEFAULT_PY_SPEC)
    return check_spec(unpack_spec(data))


_NUMBER = (int, float)
_SPEC_TYPES: dict[str, Any] = {  # the entries a worker reads, and what each must be (wire._envelope)
    "command": str,
    "env": dict,
    "inputs": list,
    "outputs": list,
    "output_dirs": list,
    "running_time_max": _NUMBER,
    "end_time": _NUMBER,
    "enforce": bool,
}


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec``, when a worker can run what it says; else EnvelopeError naming the entry
    (a hash written by another client: the task fails with that, the worker goes on)."""
    if spec["kind"] not in ("py", "cmd"):
        raise EnvelopeError(f"task spec has kind {spec['kind']!r}, not 'py' or 'cmd'")
    if spec["kind"] == "cmd" and "command" not in spec:
        raise EnvelopeError("task spec of a command task has no 'command'")
    for name, kinds in _SPEC_TYPES.items():
        value = spec.get(name)
        if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and kinds is not bool)):
            raise EnvelopeError(f"task spec entry {name!r} is {value!r}, which a worker cannot use")
    env = spec.get("env") or {}
    if not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in env.items()):
        raise EnvelopeError("task spec entry 'env' must map names to strings")
    for name in ("inputs", "outputs", "output_dirs"):
        for pair in spec.get(name) or ():
            # (the worker reads the remote name; the local one may be None: a value staged from memory)
            if not (
                isinstance(pair, list)
                and len(pair) == 2
                and isinstance(pair[1], str)
                and (pair[0] is None or isinstance(pair[0], str))
            ):
                raise EnvelopeError(f"task spec entry {name!r} holds {pair!r}, not a [local, remote] pair")
    return spec


def function_digest(fields: Mapping[bytes, bytes]) -> str:
    """The hex SHA-256 naming a PythonTask's function: the hash holds it as 32 raw bytes
    (half the memory of hex), or as hex (tasks written before)."""
    raw = fields.get(b"fn") or b""
    # (not UTF-8: another client's garbage; the function is then missing, the task fails)
    return raw.hex() if len(raw) == 32 else raw.decode(errors="replace")


def worker_view(fields: dict[bytes, bytes]) -> tuple[dict[str, Any], dict[bytes, bytes]]:
    """The spec of a claimed task and its fields as the worker reads them: the left-out
    defaults put back (the arguments of a call without any) and the function digest in
    hex.  Use after the signature check: a signature covers the hash as stored."""
    spec = task_spec(fields)
    if spec["kind"] == "py":
        fields = {**fields, b"fn": function_digest(fields).encode()}
        if b"args" not in fields:
            fields[b"args"] = NO_ARGS
    return spec, fields


class FunctionCache:
    """Pickle functions for the wire, once where that cannot change the result.

    A plain function of an importable module pickles *by reference* (its module and name),
    so its pickle is the same every time and is cached per function object.  Anything that
    pickles *by value* (lambdas, closures, functions of ``__main__``, callable objects)
    captures state that may change between submits, so it is pickled at every submit, as
    Work Queue does; identical bytes still get the same digest and are stored in Redis once.
    Within one ``submit_many`` call (``one_call``) such an object is pickled once, not once
    per task: nothing runs between its tasks that could change it.
    """

    def __init__(self) -> None:
        self._by_object: weakref.WeakKeyDictionary[Any, tuple[str, bytes]] = weakref.WeakKeyDictionary()
        self._this_call: dict[int, tuple[Any, tuple[str, bytes]]] | None = None

    @contextlib.contextmanager
    def one_call(self) -> Iterator[None]:
        self._this_call = {}
        try:
            yield
        finally:
            self._this_call = None

    def get(self, func: Callable[..., Any]) -> tuple[str, bytes]:
        this_call = self._this_call
        if this_call is not None:
            seen = this_call.get(id(func))
            if seen is not None:  # (the object is kept with its pickle, so its id stays its own)
                return seen[1]
        found: tuple[str, bytes] | None  # None only until a miss of the cache below is filled
        if not _pickled_by_reference(func):
            found = digest_pickle(func)
        else:
            found = self._by_object.get(func)
            if found is None:
                found = self._by_object[func] = digest_pickle(func)
        if this_call is not None:
            this_call[id(func)] = (func, found)
        return found


def _pickled_by_reference(func: Any) -> bool:
    if not isinstance(func, types.FunctionType) or func.__closure__:
        return False
    module = getattr(func, "__module__", None)
    if not module or module == "__main__" or "<locals>" in func.__qualname__ or func.__name__ == "<lambda>":
        return False
    return getattr(sys.modules.get(module), func.__name__, None) is func


def digest_pickle(func: Callable[..., Any]) -> tuple[str, bytes]:
    import cloudpickle

    body = cloudpickle.dumps(func)
    return hashlib.sha256(body).hexdigest(), body


_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None)})
_PLAIN_ITEMS = 10_000  # longer containers are left to cloudpickle rather than checked


def plain_data(value: Any, depth: int = 3) -> bool:
    """Built-in data only (numbers, text, bytes, None, and lists/tuples/dicts of them):
    what the standard pickler writes exactly as cloudpickle would, several times faster."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if depth and (kind is list or kind is tuple) and len(value) <= _PLAIN_ITEMS:
        return all(type(v) in _PLAIN_TYPES or plain_data(v, depth - 1) for v in value)
    if depth and kind is dict and len(value) <= _PLAIN_ITEMS:
        return all(type(k) is str and (type(v) in _PLAIN_TYPES or plain_data(v, depth - 1)) for k, v in value.items())
    return False


def pickle_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    if plain_data(args) and (not kwargs or plain_data(kwargs)):
        return pickle.dumps((args, kwargs), protocol=PICKLE_PROTOCOL)
    import cloudpickle

    return cloudpickle.dumps((args, kwargs))
