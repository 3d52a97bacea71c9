"""Size limits shared by the worker and its warm children (kept apart so that starting
``python -m wq_redis.worker.child`` imports nothing heavy)."""

MAX_STDOUT_BYTES = 16 * 1024 * 1024  # a task's captured stdout+stderr; the rest is cut
