"""TaskVine's ``File``: what ``Manager.declare_file`` / ``declare_buffer`` / ``declare_url``
return and ``Task.add_input`` / ``add_output`` take.

A File here is only a description (where the data comes from, whether workers cache it);
the engine's ``specify_input_file``, ``specify_buffer``, ``specify_url`` and
``specify_output_file`` move the data when a task is submitted (task.py).  An output
buffer receives its contents when the task that writes it comes back from ``wait``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import IO, Any

from .codes import VINE_BUFFER, VINE_FILE, VINE_URL

# TaskVine's cache levels as a program names them; all but "task" keep the file in the
# worker's cache (the engine caches by content for the worker's life: see the porting notes)
_CACHE_LEVELS = {
    False: False,
    None: False,
    "task": False,
    True: True,
    "workflow": True,
    "worker": True,
    "forever": True,
}


def cache_level(cache: Any) -> bool:
    """Whether workers keep the file (TaskVine's ``cache=`` values; others raise ValueError)."""
    try:
        return _CACHE_LEVELS[cache]
    except (KeyError, TypeError):
        raise ValueError(f"{cache!r} is not a valid cache level") from None


class File:
    """A file a task reads or writes: a local file or directory, a buffer, or a URL.

    >>> data = m.declare_file("data.txt", cache=True)
    >>> out = m.declare_buffer()
    >>> t = vine.Task("wc -l < data.txt > count"); t.add_input(data, "data.txt"); t.add_output(out, "count")
    >>> m.submit(t); m.wait(); print(out.contents())
    """

    def __init__(self, kind: int, location: str | None, cache: bool, data: bytes | None = None) -> None:
        self._kind = kind
        self._location = location  # the local path, or the URL
        self._cache = cache
        self._data = data  # a buffer's contents (None for an output buffer not yet written)

    def __bool__(self) -> bool:
        return True  # an empty buffer is still a file

    def source(self) -> str | None:
        """The local path of a file, the URL of a URL; None for a buffer."""
        return self._location

    def type(self) -> int:
        """``VINE_FILE``, ``VINE_URL`` or ``VINE_BUFFER``."""
        return self._kind

    def set_mode(self, mode: int) -> None:
        raise NotImplementedError(
            "File.set_mode() is not available in wq-redis: an input keeps the mode bits of its local file; "
            "chmod the local file, or the file in the task's command"
        )

    def contents(self, unserializer: Callable[[IO[bytes]], Any] | None = None) -> Any:
        """The bytes of a buffer or local file (through ``unserializer``, e.g. ``cloudpickle.load``,
        when given); for an output buffer, what its task wrote."""
        read = unserializer or (lambda handle: handle.read())
        if self._kind == VINE_BUFFER:
            if self._data is None:
                raise ValueError("this output buffer has no contents yet: its task has not come back from wait()")
            with io.BytesIO(self._data) as memory:
                return read(memory)
        if self._kind == VINE_FILE and self._location is not None:
            with open(self._location, "rb") as handle:
                return read(handle)
        raise ValueError(f"a URL file ({self._location}) has no local contents")

    def __len__(self) -> int:
        if self._kind == VINE_BUFFER:
            return len(self._data or b"")
        if self._kind == VINE_FILE and self._location is not None and os.path.isfile(self._location):
            return os.path.getsize(self._location)
        return 0

    def __repr__(self) -> str:
        kind = {VINE_FILE: "file", VINE_BUFFER: "buffer", VINE_URL: "url"}.get(self._kind, "?")
        return f"<vine.File {kind} {self._location or ''}>".replace(" >", ">")
