"""``python -m wq_redis.worker.child FD LIFELINE [LEDGER]``: a warm child (process.py)."""

from .process import main

if __name__ == "__main__":
    main()
