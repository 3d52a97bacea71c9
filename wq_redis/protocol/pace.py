"""How fast calls of one kind run (a moving average of seconds per call), and so how many
fit in a budget of time.  Two places size work by it: a worker, how many short tasks a
claim brings to follow each one (worker/child/quick.py); a manager, how many calls of one
function go in a pack (client/packs.py).  Both start with nothing: work is never grouped
before one call was seen to finish, so long calls are never held back from idle workers.
"""

from __future__ import annotations

FASTEST_CALL_SECONDS = 1e-6  # a call measured faster (a wall time can read 0) counts as this fast


class Pace:
    """Seconds per call, a moving average in which the newest measurement weighs ``weight``."""

    __slots__ = ("seconds_per_call", "weight")

    def __init__(self, weight: float, seconds_per_call: float | None = None) -> None:
        self.weight = weight
        self.seconds_per_call = seconds_per_call

    def record(self, calls: int, seconds: float) -> None:
        """Fold a run of ``calls`` calls that took ``seconds`` into the pace."""
        pace = seconds / calls
        known = self.seconds_per_call
        self.seconds_per_call = pace if known is None else (1 - self.weight) * known + self.weight * pace

    def calls_within(self, seconds: float, most: int) -> int:
        """Calls at this pace that fit in ``seconds``, at most ``most``; 0 while none was measured."""
        known = self.seconds_per_call
        if known is None:
            return 0
        return min(most, int(seconds / max(known, FASTEST_CALL_SECONDS)))
