"""The Work Queue API: ``WorkQueue``, tasks, result codes, statistics, categories, files,
the executor and map/pair/tree_reduce.  It speaks to Redis through ``protocol`` only; the
queue that starts an embedded Redis when given no URL is embedded/queue.py's.
"""
