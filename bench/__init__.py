"""The benchmark harness of issue 4: wq-redis against huey, RQ, Celery and a hand-written
redis-py queue, on one Redis server, with the same worker count.  See bench/README.md."""
