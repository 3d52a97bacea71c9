"""The one check of a claimed task before anything of it is unpickled.

Every path a claimed task takes (a batch, one by one, a pack's members, a task the lane
lost) goes through ``Screening.split`` first, and therefore checks nothing itself.  With a
secret, a hash must verify as a whole (a pack's members and their arguments included,
large fields as they were read); a pack's members are read here, once
(``Attempt.members``): members that do not load are another client's garbage.
"""

from __future__ import annotations

from ..protocol import packing
from ..protocol.keys import QueueKeys
from ..protocol.signing import SignatureError, Signer
from .batch import Attempt


class Screening:
    """Splits claimed attempts into those the runner may read and those that must fail
    without running (and why)."""

    def __init__(self, signer: Signer | None, keys: QueueKeys) -> None:
        self.signer = signer
        self.keys = keys  # to name an unreadable hash by its key

    def split(self, attempts: list[Attempt]) -> tuple[list[Attempt], list[tuple[Attempt, str]]]:
        """The attempts the runner may read, and the others with what is wrong with each."""
        readable: list[Attempt] = []
        refused: list[tuple[Attempt, str]] = []
        for attempt in attempts:
            problem = None
            if self.signer is not None or packing.MEMBERS in attempt.fields:
                problem = self.unreadable(attempt)
            if problem is None:
                readable.append(attempt)
            else:
                refused.append((attempt, problem))
        return readable, refused

    def unreadable(self, attempt: Attempt) -> str | None:
        """What keeps the runner from reading a claimed hash, or None (reads a pack's
        members into ``attempt.members`` on the way)."""
        if self.signer is not None:
            try:
                self.signer.verify_task(attempt.task_id, attempt.fields)
            except SignatureError as exc:
                return f"refused: {exc}"
        if packing.MEMBERS in attempt.fields:
            try:
                attempt.members = packing.claimed_members(attempt.fields)
            except ValueError as exc:
                return f"unreadable task hash {self.keys.task(attempt.task_id)}: {exc}"
        return None
