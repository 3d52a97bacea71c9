"""How our commands become bytes on the socket: a command packer for redis-py's
connections (``connection.connect`` gives every client one)."""

from __future__ import annotations

from typing import Any

from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:  # else redis-py, and so this module, packs in Python
    import hiredis

BIG_VALUE = 64 * 1024  # arguments and return values larger than this never pass through Lua
VALUE_TTL_SECONDS = 7 * 24 * 3600  # a large value whose result was never recorded expires


class CommandPacker:
    """Packs commands with hiredis (the fastest packer for our many small arguments),
    except a SET of a large value (arguments and return values over BIG_VALUE): hiredis
    copies every argument into one buffer (a memoryview twice), about 40% of a worker's
    time per 1 MiB result; redis-py's Python packer hands the value to the socket as it is.
    Our scripts' calls (EVALSHA, thousands of arguments for a batch) go to hiredis
    straight, without redis-py's per-argument type check (~0.2 us an argument).  Both
    figures: the workers' and the client's profiles of ``python -m bench.profile_wq
    --phases mib,batch`` (``make bench-profile``).
    """

    def __init__(self) -> None:
        self._python = PythonRespSerializer(BIG_VALUE, Encoder("utf-8", "strict", False).encode)
        self._fast = HiredisRespSerializer() if HIREDIS_AVAILABLE else self._python

    def pack(self, *args: Any) -> list[bytes | memoryview]:
        command = args[0]
        if command == "EVALSHA" and HIREDIS_AVAILABLE:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:  # a type hiredis does not take: redis-py's path says which
                pass
        elif (
            command == "SET" and len(args) > 2 and isinstance(args[2], (bytes, memoryview)) and len(args[2]) > BIG_VALUE
        ):
            return self._python.pack(*args)
        return self._fast.pack(*args)
