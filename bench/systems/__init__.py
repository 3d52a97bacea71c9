"""One module per system; each exposes ``SYSTEM``, a ``bench.harness.System`` subclass.

Peers (huey, RQ, Celery) are imported only when selected: they live in the bench
virtualenv (``bench/.venv``), never among the project's dependencies.
"""

MODULES = {
    "handwritten": "bench.systems.handwritten",
    "wq": "bench.systems.wq",
    "huey": "bench.systems.huey_",
    "rq": "bench.systems.rq_",
    "celery": "bench.systems.celery_",
}
ORDER = list(MODULES)
PEERS = ("huey", "rq", "celery")
