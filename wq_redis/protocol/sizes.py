"""Byte sizes as people write them (``512M``, ``2GiB``) and as messages show them."""

from __future__ import annotations

import re

MB = 1024 * 1024  # Work Queue's MB (memory, disk, caches): 2**20 bytes, as tasks declare them

# What one task may hold at most, by default: arguments, function and input files together.
# `wq-redis worker --max-task-bytes` loads no more, and a manager accepts no more at submit
# (WorkQueue.specify_file_limits), so that a task a manager accepts, a default worker loads.
MAX_TASK_BYTES = 512 * 1024 * 1024

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"512M"`` -> 536870912.  Units are powers of 1024 (K, M, G, T, with or without
    ``iB``/``B``); a plain number is bytes.  Raises ValueError for anything else."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size must not be negative: {text}")
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (write bytes, or a number with K, M, G or T, e.g. 512M)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def show_size(size: int) -> str:
    """``536870912`` -> ``"512.0 MiB"``: for messages."""
    if size < 1024:
        return f"{size} bytes"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
