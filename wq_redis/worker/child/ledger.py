"""The fast lane's ledger (worker/lane.py): a pipe a child writes ``LaneClaimed`` and
``LaneDone`` records into, each framed as its size and its pickle (of ``messages.encode``), that the worker reads
when it looks."""

from __future__ import annotations

import pickle
import select
import struct

from .messages import LaneClaimed, LaneDone, decode, encode

FRAME = struct.Struct("!I")  # a record: its size, then its pickle
ATOMIC_BYTES = select.PIPE_BUF  # a write this small lands whole, or not at all


def frame(record: LaneClaimed | LaneDone) -> bytes:
    data = pickle.dumps(encode(record), protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(data)) + data


def unframe(data: bytes) -> tuple[list[LaneClaimed | LaneDone], bytes]:
    """The whole records in ``data``, and the rest (a record not yet all written)."""
    records = []
    offset = 0
    while offset + FRAME.size <= len(data):
        (size,) = FRAME.unpack_from(data, offset)
        if offset + FRAME.size + size > len(data):
            break
        record = decode(pickle.loads(data[offset + FRAME.size : offset + FRAME.size + size]))
        assert isinstance(record, (LaneClaimed, LaneDone)), record
        records.append(record)
        offset += FRAME.size + size
    return records, data[offset:]
