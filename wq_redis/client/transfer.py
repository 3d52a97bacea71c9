"""A task's transfer fields, under Work Queue's names: the bytes of its inputs and
outputs and when they moved, as the worker measured them (the ``xfer`` result field).

Work Queue's manager sends the inputs to the worker and receives the outputs from it;
here the worker stages the inputs (from the task's hash, its file cache, a URL or a
command) and collects the outputs into its result.  So ``total_bytes_sent`` is the
inputs' bytes, ``total_bytes_received`` the outputs', and the four times are the
worker's clock in microseconds since the epoch, as ``execute_cmd_start``.  A task
without files (a plain PythonTask) moves nothing: every field is 0, as is every field
of a value that does not parse (another client's garbage never raises out of a
property, so never out of ``wait``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple

from ..protocol.fields import TRANSFER

_KEYS = ("in", "out", "in_start", "in_end", "out_start", "out_end")  # worker/staging.py transfer_field


class Transfer(NamedTuple):
    """The ``xfer`` field parsed: bytes in and out, then the four times (us)."""

    sent: int = 0
    received: int = 0
    send_start: int = 0
    send_finish: int = 0
    receive_start: int = 0
    receive_finish: int = 0


NOTHING = Transfer()


def parse_transfer(raw: bytes | None) -> Transfer:
    """The fields of ``raw``, or all 0 when it is absent or not what a worker writes
    (not JSON, not an object, a value not a non-negative integer)."""
    if not raw:
        return NOTHING
    try:
        data = json.loads(raw)
        values = [data[key] for key in _KEYS]
    except (ValueError, TypeError, KeyError, RecursionError):
        return NOTHING
    if not all(type(v) is int and 0 <= v < 1 << 63 for v in values):
        return NOTHING
    return Transfer(*values)


class TaskTransfer:
    """Work Queue's transfer properties of a task (0 until it is back)."""

    if TYPE_CHECKING:

        def _get(self, name: str) -> bytes | None: ...

    @property
    def _transfer(self) -> Transfer:
        return parse_transfer(self._get(TRANSFER))

    @property
    def total_bytes_sent(self) -> int:
        """Bytes of the input files put in the task's sandbox (its last attempt)."""
        return self._transfer.sent

    @property
    def total_bytes_received(self) -> int:
        """Bytes of the output files that came back (its last attempt)."""
        return self._transfer.received

    @property
    def total_bytes_transferred(self) -> int:
        """Bytes sent and received."""
        t = self._transfer
        return t.sent + t.received

    @property
    def total_transfer_time(self) -> int:
        """Microseconds spent staging the inputs and collecting the outputs (a phase the
        worker's clock stepped back in counts 0)."""
        t = self._transfer
        return max(0, t.send_finish - t.send_start) + max(0, t.receive_finish - t.receive_start)

    @property
    def send_input_start(self) -> int:
        """When staging the inputs started, microseconds since the epoch (0: no inputs)."""
        return self._transfer.send_start

    @property
    def send_input_finish(self) -> int:
        """When staging the inputs ended, microseconds since the epoch (0: no inputs)."""
        return self._transfer.send_finish

    @property
    def receive_output_start(self) -> int:
        """When collecting the outputs started, microseconds since the epoch (0: no outputs)."""
        return self._transfer.receive_start

    @property
    def receive_output_finish(self) -> int:
        """When collecting the outputs ended, microseconds since the epoch (0: no outputs)."""
        return self._transfer.receive_finish
