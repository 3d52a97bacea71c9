"""What a manager asks of a queue's workers, on Work Queue's terms: to exit
(``shutdown_workers``), and to take no task while their host is blocked (``block_host``).

Nothing here is per task: the manager writes a mark (a worker record's "shutdown" field,
an entry of the queue's blocked-hosts hash) and each worker reads its own at its
heartbeat (renew.lua), so claims and runs cost what they did; the manager also rings the
workers' control keys (keys.control), which end the wait between their heartbeats, so
that a request takes effect at once however far apart heartbeats are.
"""

from __future__ import annotations

from typing import cast

from .pipeline import ScriptPipeline

FOREVER = 0  # a blocked-hosts entry that lasts until unblocked


class WorkerControl(ScriptPipeline):
    """The manager's requests to workers (a part of ``QueueStore``)."""

    def shutdown_workers(self, names: list[str]) -> int:
        """Ask the workers ``names`` to exit; how many were asked (those still registered)."""
        if not names:
            return 0
        keys = [key for name in names for key in (self.keys.worker(name), self.keys.control(name))]
        return int(cast(int, self._scripts["shutdown"](keys=keys, args=[])))

    def wake_workers(self) -> None:
        """Ring the control key of every registered worker: each heartbeats at once and
        reads what was asked of it (a host blocked or unblocked).  One round trip."""
        names = cast("list[bytes]", self.client.zrange(self.keys.workers, 0, -1))
        if names:  # (a control key of the wrong type: that worker sees the request at its next beat)
            self._ring([self.keys.control(name.decode()) for name in names])

    def block_host(self, host: str, seconds: float) -> None:
        """Workers on ``host`` claim no task of this queue for ``seconds`` (< 1: until
        unblocked), counted on Redis' clock, which the heartbeats compare with."""
        until = FOREVER
        if seconds >= 1:
            now_s, now_us = self.client.time()
            until = now_s * 1000 + now_us // 1000 + int(seconds * 1000)
        self.client.hset(self.keys.blocked_hosts, host, until)
        self.wake_workers()

    def unblock_host(self, host: str | None) -> None:
        """Unblock ``host``, or every host when None."""
        if host is None:
            self.client.delete(self.keys.blocked_hosts)
        else:
            self.client.hdel(self.keys.blocked_hosts, host)
        self.wake_workers()

    def blocked_hosts(self) -> list[str]:
        """The hosts blocked now (entries whose time ran out left out)."""
        now_s, now_us = self.client.time()
        now_ms = now_s * 1000 + now_us // 1000
        entries = cast("dict[bytes, bytes]", self.client.hgetall(self.keys.blocked_hosts))
        return sorted(h.decode() for h, until in entries.items() if until == b"0" or _number(until) > now_ms)


def _number(text: bytes) -> int:
    return int(text) if text.isdigit() else 0
