"""The worker-child channel: pickled messages whose large payloads travel out of band."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from wq_redis.worker.child.channel import BUFFER_BYTES, OUT_OF_BAND_BYTES, Channel, out_of_band


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    left, right = Channel(a), Channel(b)
    yield left, right
    left.close()
    right.close()


def test_small_payloads_stay_in_the_pickle(pair):
    left, right = pair
    small = b"x" * OUT_OF_BAND_BYTES
    assert out_of_band(small) is small and out_of_band(None) is None
    left.send({"value": out_of_band(small), "n": 3})
    assert right.recv() == {"value": small, "n": 3}


def test_large_payloads_arrive_intact_as_views_of_the_received_buffer(pair):
    left, right = pair
    payloads = [os.urandom(OUT_OF_BAND_BYTES + 1), os.urandom(3 * 1024 * 1024)]
    left.send({"calls": [(1, out_of_band(payloads[0])), (2, out_of_band(payloads[1]))], "tail": b"end"})
    message = right.recv()
    (first_id, first), (second_id, second) = message["calls"]
    assert (first_id, second_id) == (1, 2) and message["tail"] == b"end"
    assert isinstance(first, memoryview) and bytes(first) == payloads[0]
    assert isinstance(second, memoryview) and bytes(second) == payloads[1]


def test_a_message_larger_than_the_socket_buffers_is_sent_whole_and_in_order(pair):
    left, right = pair
    big = os.urandom(3 * BUFFER_BYTES)  # several partial sends while the other end reads
    received = []
    reader = threading.Thread(target=lambda: received.extend(right.recv() for _ in range(2)))
    reader.start()
    left.send({"value": out_of_band(big)})
    left.send({"after": out_of_band(big[::-1])})
    reader.join(30)
    assert bytes(received[0]["value"]) == big and bytes(received[1]["after"]) == big[::-1]


def test_a_closed_end_is_end_of_file(pair):
    left, right = pair
    left.close()
    with pytest.raises(EOFError):
        right.recv()


class _Trickle:
    """A socket that takes at most ``step`` bytes per sendmsg, as one cut short by a
    signal or a full buffer does."""

    def __init__(self, step: int) -> None:
        self.step, self.data, self.calls = step, bytearray(), 0

    def setsockopt(self, *args: object) -> None:
        pass

    def sendmsg(self, buffers: list[memoryview]) -> int:
        self.calls += 1
        taken = 0
        for buffer in buffers:
            part = bytes(buffer[: self.step - taken])
            self.data += part
            taken += len(part)
            if taken == self.step:
                break
        return taken


@pytest.mark.parametrize("step", [1, 5, 8, 13, 4096])
def test_sends_cut_short_resume_where_they_stopped(step):
    trickle = _Trickle(step)
    channel = Channel(trickle)  # type: ignore[arg-type]
    payload = os.urandom(OUT_OF_BAND_BYTES + 7)
    channel.send({"v": out_of_band(payload), "s": b"small"})
    assert trickle.calls > 1
    a, b = socket.socketpair()
    try:
        a.sendall(bytes(trickle.data))
        message = Channel(b).recv()
    finally:
        a.close()
        b.close()
    assert bytes(message["v"]) == payload and message["s"] == b"small"


def test_every_message_type_arrives_as_itself(pair):
    """Typed messages (child/messages.py) travel as tags and values and arrive as the same
    type with the same fields; a batch's large argument still goes out of band."""
    from wq_redis.worker.child.messages import (
        BatchDone,
        CallDone,
        LaneClaimed,
        LaneEnd,
        LaneSpec,
        NeedBodies,
        RunBatch,
        RunCall,
        Status,
        StopLane,
    )

    left, right = pair
    big = os.urandom(OUT_OF_BAND_BYTES + 1)
    messages = [
        RunCall("d1", None, b"args", {"A": None}, "/tmp/t1.1"),
        RunBatch([1, 2], ["d1", "d2"], [out_of_band(big), b"a"], [{}, {"B": "1"}], {"d2": b"body"}, {}, "/tmp/p"),
        LaneSpec({"host": "h"}, "q", {"worker": "w"}, 10, "/tmp/p", None),
        StopLane(),
        NeedBodies(("d1",)),
        CallDone(Status.RAISED, b"exc", "", b"out", 0.5, 30),
        BatchDone([Status.OK, Status.ERROR], [b"v", None], ["", "why"], [b"", b""], [0.1, 0.2], [0.3, 0.4], 30),
        LaneClaimed(7, "tok", "c1.m0.d0.g0|", b"1", None),
        LaneEnd([], [], error="claim failed"),
    ]
    for message in messages:
        left.send_message(message)
        received = right.recv_message()
        assert type(received) is type(message)
        if isinstance(message, RunBatch):
            assert bytes(received.args[0]) == big and received._replace(args=[]) == message._replace(args=[])
        else:
            assert received == message
        if isinstance(received, CallDone):  # members, not equal strings: results.py compares by identity
            assert received.status is Status.RAISED
        if isinstance(received, BatchDone):
            assert received.statuses[0] is Status.OK and received.statuses[1] is Status.ERROR
