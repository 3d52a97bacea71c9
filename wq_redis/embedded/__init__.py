"""A laptop without Redis: a private Redis server started on demand, worker processes on
this machine, and the ``WorkQueue``/``Executor`` that use them (what ``wq.WorkQueue`` is).
"""
