"""The huey application both the benchmark and its consumers import (tasks by name)."""

from __future__ import annotations

import os

from huey import RedisHuey

from bench import tasks

# notify_result: a waiting client BLPOPs a per-result key instead of polling with backoff
# (huey's fastest way to wait for one result); store_none: the no-op's None is a result.
huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"], notify_result=True, store_none=True, blocking=True)

noop = huey.task(name="noop")(tasks.noop)
echo = huey.task(name="echo")(tasks.echo)
whoami = huey.task(name="whoami")(tasks.whoami)


def run_consumer() -> None:
    """One consumer with one worker thread: one task at a time (``huey_consumer -w 1``)."""
    huey.create_consumer(workers=1, worker_type="thread", periodic=False).run()
