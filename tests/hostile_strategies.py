"""Hypothesis strategies of what a hostile client with write access to Redis can write.

The strategies draw *plans*, plain data with a readable repr (hypothesis prints the
minimal failing plan): which key, which type, which fields, which ids.  Keys, ids and
the malicious pickle are symbolic here (``KeyRef``, ``IdRef``, ``EVIL``) because they
are only known when a case runs (the manager's next task ids, the workers' names, the
marker file); ``test_hostile_fuzz.Case`` resolves them.

Families (one test function each in test_hostile_fuzz.py):
  wrong types   a key of the schema (keys.py) holding a type it never has;
  hash fields   garbage fields in task hashes: known names with garbage values, unknown
                names, pack fields (packing.py), truncated and oversized values; written
                into the hashes of the manager's next task ids before it submits (submit.lua
                replaces a hash it did not write: those tasks come back with their real
                results) or into foreign task hashes;
  foreign ids   ids pushed into every list, set and sorted set that holds task ids;
  pickles       a pickle whose ``__reduce__`` creates a marker file, wherever bytes are
                unpickled (arguments, pack members and results, return values, large
                fields beside a hash, values beside it, function bodies).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from wq_redis.protocol import packing
from wq_redis.protocol.serialize import pack_spec

REDIS_TYPES = ("string", "list", "hash", "set", "zset", "stream")
OVERSIZED = 70 * 1024  # past store.BIG_VALUE (64 KiB): the sizes that take other code paths


class Boom:
    """A pickle that, once loaded, leaves a marker file: proof that it was unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def malicious_pickle(marker: str, shape: str, protocol: int) -> bytes:
    """A pickle that runs ``touch marker`` when loaded, shaped as the place expects it:
    a bare value, call arguments ``(args, kwargs)``, or keyword arguments."""
    boom = Boom(marker)
    value: Any = {"value": boom, "args": ((boom,), {}), "kwargs": ((), {"x": boom})}[shape]
    return pickle.dumps(value, protocol=protocol)


@dataclass(frozen=True)
class Evil:
    """Placeholder for a malicious pickle (the marker's path is known only at run time)."""

    shape: str = "value"
    protocol: int = pickle.DEFAULT_PROTOCOL

    def __repr__(self) -> str:
        return f"EVIL({self.shape}, protocol={self.protocol})"


@dataclass(frozen=True)
class IdRef:
    """A task id: ``own:N`` the manager's N-th task of the case (its id is known before it
    submits: ids come from the ``seq`` counter), ``foreign:N`` an id nobody submitted,
    ``raw:TEXT`` a member that is not an id at all."""

    kind: str
    value: str | int

    def __repr__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class KeyRef:
    """A key of the queue's schema by role (``Case.key`` turns it into a name)."""

    role: str

    def __repr__(self) -> str:
        return self.role


# -- wrong types ------------------------------------------------------------------------
# role -> (the type it holds when wq-redis writes it, whether its tasks must keep running
# while the garbage is there).  "state" keys hold the queue's own books (counters, ids in
# flight): while one holds garbage the manager may get Redis errors, but once the garbage
# is gone every task it accepted comes back.  At every other key the garbage is
# something a claim, a heartbeat or a retrieve has to skip: the manager's tasks come back
# while it is there.
SCHEMA_KEYS: dict[str, tuple[str, bool]] = {
    "seq": ("string", False),
    "stats": ("hash", False),
    "queues": ("set", False),
    "leases": ("zset", False),
    "done": ("list", False),
    "retrieving": ("set", False),
    "done:wake": ("list", False),
    "workers": ("zset", False),
    "ready:own": ("zset", False),
    "fifo:own": ("list", False),
    "t:own:0": ("hash", True),  # the manager's next task id: submit.lua replaces what it did not write
    "incarnation": ("string", True),  # the manager recovers (attaches again, resubmits) and goes on
    "wake": ("list", False),  # submit.lua rings it: the manager's submit may fail
    "wake:own": ("list", False),
    "categories": ("hash", True),
    "blocked": ("hash", True),  # hosts blocked by block_host: every heartbeat reads it (renew.lua)
    "reaper": ("string", True),
    "ready:foreign": ("zset", True),  # a registered member no task of ours uses
    "fifo:foreign": ("list", True),
    "wake:foreign": ("list", True),
    "t:foreign": ("hash", True),
    "t:foreign:args": ("string", True),
    "t:own:0:args": ("string", True),  # a large field name the task does not use
    "w:worker": ("hash", True),  # a worker's own record
    "ww:worker": ("list", True),  # ... and its own wake key
    "wc:worker": ("list", True),  # ... and the control key its heartbeat waits on
    "w:ghost": ("hash", True),
    "ww:ghost": ("list", True),
    "v:token": ("string", True),
    "fn:own": ("string", True),  # the body of this case's function, before the manager stores it:
    # that task may fail (cleanly), the others must not
    "fn:other": ("string", True),
    "file:other": ("string", True),
    "label:own": ("hash", True),  # an automatic category's label: claims size its tasks without it
    "shards": ("string", True),  # the shard count (partitions.py): what is no count reads as never sharded
}

# Roles read when a manager opens the queue (and a worker starts), not while tasks run:
# their garbage is written before the case's manager opens the queue, or nobody would read it.
READ_AT_OPEN = frozenset({"shards"})


# Roles whose own type is drawn too, with another value ("string" at a string key), and
# deletion ("none"): for the incarnation, a lost state is what the manager must notice.
VALUE_CHANGES = frozenset({"incarnation"})


@dataclass(frozen=True)
class WrongType:
    key: KeyRef
    type: str
    payload: bytes  # what the wrong-type value holds (a member, a field, an entry)

    @property
    def tolerated(self) -> bool:
        return SCHEMA_KEYS[self.key.role][1]

    @property
    def at_open(self) -> bool:
        return self.key.role in READ_AT_OPEN


@st.composite
def wrong_types(draw: st.DrawFn) -> WrongType:
    role = draw(st.sampled_from(sorted(SCHEMA_KEYS)))
    right = SCHEMA_KEYS[role][0]
    kinds = [t for t in REDIS_TYPES if t != right] + ([right, "none"] if role in VALUE_CHANGES else [])
    kind = draw(st.sampled_from(kinds))
    payload = draw(st.sampled_from([b"1", b"garbage", b"", b"-1", b"\xff\x00"]))
    return WrongType(KeyRef(role), kind, payload)


# -- garbage values and fields ----------------------------------------------------------
def _truncations(value: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(min_value=0, max_value=max(len(value) - 1, 0)).map(lambda n: value[:n])


_REAL_VALUES = [
    pack_spec({"kind": "py", "command": "python:int"}),
    pack_spec({"kind": "cmd", "command": "echo fuzz-ok"}),
    pickle.dumps(((2, 3), {})),
    packing.dump([(1, pickle.dumps(((), {})))]),
    packing.dump([(1, {b"r": b"0", b"val": pickle.dumps(1)})]),
]

garbage_values: st.SearchStrategy[Any] = st.one_of(
    st.binary(max_size=80),
    st.sampled_from(
        [
            b"",
            b"0",
            b"1",
            b"-1",
            b"2",
            b"3",
            b"4",
            b"999999999999999999999",
            b"1e309",
            b"nan",
            b"abc",
            b" 1",
            b"1.5",
            b"\xff\xfe",
            b"\n",
            b"a\nb",
            b"t\n\nx",
        ]
    ),
    st.sampled_from(_REAL_VALUES).flatmap(_truncations),  # truncated envelopes and pickles
    st.sampled_from(
        [  # envelopes that decode but say something odd
            b"WQ\x01{}",
            b"WQ\x01[]",
            b"WQ\x01null",
            b'WQ\x02{"kind":"py"}',
            b'WQ\x01{"kind":"cmd"}',
            b'WQ\x01{"kind":"py","command":"x","request":["a",null]}',
            b'WQ\x01{"kind":"cmd","command":1}',
            b'WQ\x01{"kind":"cmd","command":"true","inputs":[["a","../../escape"]]}',
            b'WQ\x01{"kind":"cmd","command":"true","outputs":"x"}',
            b'WQ\x01{"kind":"cmd","command":"true","env":[1]}',
            b'WQ\x01{"kind":"py","command":"x","running_time_max":"soon"}',
        ]
    ),
    st.sampled_from(
        [  # pack-shaped values: plain data of the wrong shape
            packing.dump("x"),
            packing.dump([("a", b"")]),
            packing.dump([(1,)]),
            packing.dump([[1, 2, 3]]),
            packing.dump({1: 2}),
            packing.dump([(1, {b"r": "text"})]),
            packing.dump([(-1, b"")]),
            packing.dump([(10**30, b"")]),
            packing.dump([(1, b"\x80\x05garbage")]),
        ]
    ),
    st.sampled_from([OVERSIZED, 1 << 20]).map(lambda n: b"x" * n),  # oversized
)

# Field names a task hash may hold (wire.py, packing.py, files.py, store.py).
KNOWN_FIELDS = (
    "s",
    "q",
    "p",
    "a",
    "mr",
    "tok",
    "w",
    "ts",
    "tf",
    "sub",
    "spec",
    "fn",
    "args",
    "cat",
    "big",
    "vk",
    "r",
    "rs",
    "out",
    "val",
    "err",
    "host",
    "alloc",
    "meas",
    "xfer",
    "rsig",
    "sig",
    "lt",
    "n",
    "pa",
    "pr",
    "nc",
    "nf",
    "fids",
    "vks",
    "pc:1",
    "in:x",
    "cin:x",
    "tin:x",
    "ctin:x",
    "o:x",
    "od:x",
    "im:x",
    "om:x",
    "url:x",
    "curl:x",
    "fcmd:x",
    "cfcmd:x",
)

field_names: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(KNOWN_FIELDS),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz:/._-0123456789", min_size=1, max_size=12),
)


@dataclass(frozen=True)
class HashFields:
    """Garbage fields in a task hash: ``own:N`` (written before the manager submits it:
    submit.lua replaces the hash, and the task comes back with its real result) or a
    foreign hash (queued in the manager's ready list, or pushed to the done list)."""

    target: IdRef
    fields: tuple[tuple[str, Any], ...]
    foreign_in: str = ""  # for a foreign hash: "fifo:own" or "done"


@st.composite
def hash_fields(draw: st.DrawFn) -> HashFields:
    fields = tuple(draw(st.dictionaries(field_names, garbage_values, min_size=1, max_size=4)).items())
    if draw(st.booleans()):
        return HashFields(IdRef("own", draw(st.integers(0, 2))), fields)
    where = draw(st.sampled_from(["fifo:own", "done"]))
    base = (
        ("s", b"3" if where == "done" else b"1"),
        ("q", "own"),
        ("spec", pack_spec({"kind": "cmd", "command": "echo foreign"})),
    )
    return HashFields(IdRef("foreign", draw(st.integers(1, 50))), base + fields, where)


# -- foreign ids in every list ------------------------------------------------------------
ID_LISTS = ("done", "retrieving", "fifo:own", "fifo:foreign", "ready:own", "ready:foreign", "leases")

task_ids: st.SearchStrategy[IdRef] = st.one_of(
    st.integers(0, 2).map(lambda n: IdRef("own", n)),
    st.integers(1, 50).map(lambda n: IdRef("foreign", n)),
    st.sampled_from(
        [
            "abc",
            "",
            "-1",
            "0",
            "-0",
            " 7",
            "7 ",
            "1.5",
            "1e3",
            "0x10",
            "99999999999999999999",
            "9" * 300,
            "١٢",
            "nan",
            "inf",
            "\x00",
        ]
    ).map(lambda text: IdRef("raw", text)),
)


@dataclass(frozen=True)
class ForeignIds:
    pushes: tuple[tuple[str, tuple[IdRef, ...]], ...]  # (list role, ids)
    score: float  # for sorted sets: a priority (ready) or a lease deadline (leases, 0 = expired)


@st.composite
def foreign_ids(draw: st.DrawFn) -> ForeignIds:
    pushes = draw(
        st.lists(
            st.tuples(st.sampled_from(ID_LISTS), st.lists(task_ids, min_size=1, max_size=3).map(tuple)),
            min_size=1,
            max_size=3,
        )
    )
    return ForeignIds(tuple(pushes), draw(st.sampled_from([0.0, -1.0, 1e18])))


# -- malicious pickles ------------------------------------------------------------------
# Where bytes get unpickled, and whether a worker or manager without a secret may load
# them: without a secret the manager's own hashes, and tasks anyone queues, are trusted by
# design (whoever can write Redis can submit a task), so those places are drawn only for
# the secret configuration.  The others are never legitimately read: a foreign finished
# task (the manager must not hand it out), a function body that does not hash to its
# digest (checked with or without a secret).
PICKLE_PLACES: dict[str, bool] = {  # place -> drawn without a secret too
    "own pack member args (n, pa)": False,  # issue 14 item 1
    "own pack member results (n, pr)": False,
    "own large args beside the hash (big, t:ID:args)": False,
    "own return value beside the hash (vk, v:TOKEN)": False,
    "own planted val of a command task": False,
    "foreign queued task args": False,
    "foreign queued pack members": False,
    "function body at fn:DIGEST": True,
    "foreign finished val": True,
    "foreign finished pack results": True,
    "foreign finished value beside (vk)": True,
}


@dataclass(frozen=True)
class PicklePlacement:
    place: str
    evil: Evil
    target: int  # which of the manager's tasks (own places), or foreign id


def pickle_placements(secret: bool) -> st.SearchStrategy[PicklePlacement]:
    places = sorted(p for p, plain in PICKLE_PLACES.items() if secret or plain)
    evil = st.builds(Evil, st.sampled_from(["value", "args", "kwargs"]), st.integers(2, pickle.HIGHEST_PROTOCOL))
    return st.builds(PicklePlacement, st.sampled_from(places), evil, st.integers(0, 2))
