"""A laptop without Redis: a private Redis server started on demand, worker processes on
this machine, the ``WorkQueue``/``Executor`` that use them (what ``wq.WorkQueue`` is), and
``wq.Factory("local", ...)``, which starts such workers as a queue's tasks need them.
"""
