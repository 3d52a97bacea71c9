"""The Celery application both the benchmark and its workers import.

Redis is broker and result backend.  Pickle serialization (as huey and RQ use) so the
1 MiB payload travels as bytes, not base64 in JSON.  Otherwise Celery's defaults.
"""

from __future__ import annotations

import os

from celery import Celery

from bench import tasks

QUEUE = "bench"
app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_serializer="pickle",
    result_serializer="pickle",
    accept_content=["pickle"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=3600,
)

noop = app.task(name="bench.noop")(tasks.noop)
echo = app.task(name="bench.echo")(tasks.echo)
whoami = app.task(name="bench.whoami")(tasks.whoami)
