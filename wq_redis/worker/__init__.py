"""The worker side: claim loop (``loop``), resources (``resources``), task execution
(``runner``), warm Python processes (``pool``, ``child``).  Nothing is imported here, so
a warm child (``python -m wq_redis.worker.child``) starts without the worker's modules."""
