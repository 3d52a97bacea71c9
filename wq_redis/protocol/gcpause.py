"""Pausing Python's cyclic garbage collector around the manager's bulk loops.

``submit_many`` and a retrieve allocate thousands of small dicts and tuples, none of
them in a reference cycle: plain reference counting frees them all.  Each 700 such
allocations still start a collection, and every tenth of those a deeper one that walks
every object the program holds (with a million submitted tasks, most of its time).
Pausing the collector for the loop leaves it nothing less to find; it runs at the next
allocation after.  Never around a call to Redis: a manager blocked in ``wait`` must not
keep the collector from other threads.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the block (one that was already off stays off)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
