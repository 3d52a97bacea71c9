"""The state a ``WorkQueue``'s parts share, declared in one place.

``WorkQueue`` (queue.py: construction, lifecycle, stats) is assembled from parts that
each own one step of a task's way: ``Submitting`` (submitting.py: encode, place, pack,
buffer), ``Retrieving`` (retrieving.py: wait, take results, acknowledge), ``Cancelling``
(cancelling.py) and ``Recovering`` (recovery.py: re-attach, Redis' lost state).  They are
mixins of the one queue object rather than objects of their own so that the hot paths
(``submit``, ``submit_many``, ``wait``) read their state as directly as before the split.
``queue.py`` sets every attribute below in ``WorkQueue.__init__``; the parts only use them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

    from ..protocol.serialize import FunctionCache
    from ..protocol.signing import Signer
    from ..protocol.store import QueueStore, Submitted
    from .allocation import Categories, Category
    from .books import TaskBooks
    from .files import FileStager
    from .packs import PackPlanner
    from .reconnect import Reconnect
    from .submit_buffer import Row, SubmitBuffer
    from .task import Task

IDS_LOGGED = 20  # ids named in one log line (about tasks that are not this manager's, say)


def some_ids(ids: Sequence[int]) -> str:
    """Ids for a log line: the first ``IDS_LOGGED`` of them."""
    return ", ".join(map(str, ids[:IDS_LOGGED])) + (" ..." if len(ids) > IDS_LOGGED else "")


class QueueState:
    """The attributes of a queue that more than one of its parts reads (see the module doc)."""

    name: str
    keep_results: int  # seconds a retrieved task stays in Redis (0: deleted)
    enforce_limits: bool
    redis_url: str
    _signer: Signer | None  # signs tasks and checks results when the queue has a secret
    _redis: Reconnect  # runs each call to Redis, retrying through an outage
    _client: redis.Redis
    _store: QueueStore  # every Redis call of the queue
    _incarnation: str  # the queue state in Redis this manager attached to (recovery.py)
    _functions: FunctionCache
    _uploaded: dict[str, float]  # function digest -> when this manager last stored it
    _ids: Iterator[int]  # task ids reserved and not yet used
    _placements: dict[tuple[Any, ...], str]  # (category, resources, tag) -> ready queue (allocating.py)
    _buffer: SubmitBuffer  # rows submitted and not yet sent
    _packer: PackPlanner
    _books: TaskBooks  # which tasks this manager waits for, and which came back
    _unacked: list[int]  # taken from Redis, acknowledged with the next retrieve
    _released: list[int]  # taken from Redis but not ours: released with the next retrieve
    _drained: bool  # the last retrieve emptied the done list
    _files: FileStager
    _allocation: Categories  # the categories' allocation models (allocating.py)
    _learned: dict[str, int]  # results of automatic categories learned, not yet published (allocating.py)
    _auto: dict[str, Category]  # automatic categories with a label, by hex name (allocating.py)

    if TYPE_CHECKING:  # steps one part calls in another

        def _send_buffered(self) -> None: ...
        def _recover_lost_state(self, seen: str | None) -> None: ...
        def _placement(self, task: Task) -> str: ...
        def _encode_fields(self, task: Task) -> tuple[dict[str, Any], dict[str, bytes]]: ...
        def _signed_row(self, task: Task, task_id: int, member: str, fields: dict[str, Any]) -> Row: ...
        def _upload_functions(self, bodies: dict[str, bytes]) -> None: ...
        def _report_replaced(self, submitted: Submitted) -> None: ...
        def _store_category(self, category: str) -> None: ...
        def _republish_labels(self) -> None: ...
        def _learn(self, task: Task) -> None: ...
        def _publish_learned(self, everything: bool = False) -> None: ...
        def _retrieve(self, max_tasks: int = ..., block: float = 0.0) -> int: ...
