"""Pickled messages between the worker and its warm children over a socketpair.

``multiprocessing.connection.Connection`` reads a large message through a BytesIO in
buffer-sized pieces; for a 1 MiB argument that was about 800 us a direction on our
machines (the 1 MiB round of ``python -m bench.run --systems wq``, and the workers'
profiles of ``python -m bench.profile_wq --phases mib``).  Here a message lands in
preallocated buffers with ``recv_into`` and the sockets get large kernel buffers.

Large payloads (a task's arguments, its return value) travel out of band: the sender
wraps them in ``pickle.PickleBuffer`` and they go from their own memory to the socket in
the same ``sendmsg`` as the pickle, never copied into it; the receiver gets each as a
``memoryview`` of the buffer it was received into, never copied out of it.  A 1 MiB task
had its payload copied four times more on the way to the child and back without this.

Wire format: a header (pickle size, buffer count), the buffer sizes, the pickle, the
buffers.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

from .messages import Message, decode, encode

BUFFER_BYTES = 4 * 1024 * 1024  # kernel socket buffers: a large message in few system calls
OUT_OF_BAND_BYTES = 64 * 1024  # payloads larger than this are worth sending out of band
_HEADER = struct.Struct("!QI")
_SIZE = struct.Struct("!Q")


def out_of_band(data: bytes | memoryview | None) -> Any:
    """``data`` marked to travel beside the pickle when it is large (else as it is)."""
    if data is not None and len(data) > OUT_OF_BAND_BYTES:
        return pickle.PickleBuffer(data)
    return data


class Channel:
    """One end of a socketpair carrying pickled messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
            except OSError:
                pass  # the system's limit stands; only slower

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: Any) -> None:
        """Pickle and send one message (raises OSError when the other end is gone)."""
        buffers: list[pickle.PickleBuffer] = []
        body = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
        views = [buffer.raw() for buffer in buffers]
        head = _HEADER.pack(len(body), len(views)) + b"".join(_SIZE.pack(view.nbytes) for view in views)
        self._send_parts([memoryview(head), memoryview(body), *views])

    def send_message(self, message: Message) -> None:
        """Send one of messages.py's messages, as the plain data ``encode`` makes of it."""
        self.send(encode(message))

    def recv_message(self) -> Message:
        """The next message sent with ``send_message``."""
        return decode(self.recv())

    def recv(self) -> Any:
        """The next message; EOFError when the other end closed."""
        size, count = _HEADER.unpack(self._exactly(_HEADER.size))
        sizes = [_SIZE.unpack_from(self._exactly(_SIZE.size))[0] for _ in range(count)]
        body = self._exactly(size)
        return pickle.loads(body, buffers=[memoryview(self._exactly(n)) for n in sizes])

    def _send_parts(self, parts: list[memoryview]) -> None:
        """All of ``parts``, in order, in as few system calls as the socket takes (one,
        unless a signal or a full buffer cuts a send short; the other end then wakes once)."""
        parts = [part for part in parts if part.nbytes]
        while parts:
            sent = self.sock.sendmsg(parts)
            while sent:
                if sent >= parts[0].nbytes:
                    sent -= parts[0].nbytes
                    parts.pop(0)
                else:
                    parts[0] = parts[0][sent:]
                    sent = 0

    def _exactly(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            count = self.sock.recv_into(view[got:], size - got)
            if not count:
                raise EOFError("the other end of the channel closed")
            got += count
        return buffer

    def close(self) -> None:
        self.sock.close()
