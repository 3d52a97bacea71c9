"""The warm process that runs PythonTasks for a worker (``python -m wq_redis.worker.child``).

It imports only this package and the protocol modules a call needs, never the worker's
own modules nor the client API, so a child starts small:

    process      the loop serving the worker's messages: calls, batches, the fast lane
    messages     the messages between worker and child (dataclasses, a Status enum)
    channel      their framing over the socketpair (shared with the worker)
    capture      fds 1 and 2 captured for a call's output; limits: the output's cap
    sandbox      the directory a batch's calls run in, emptied after each
    environment  the variables a task sees, and the child's changes to its own
    results      a call's outcome and the result fields complete.lua writes (both sides)
    quick        which tasks run as quick calls, and how many a claim brings (both sides)
    lane         the child's side of the fast lane (imports redis-py; loaded on first use)

Nothing is imported here: the worker imports the modules it shares by name.
"""
