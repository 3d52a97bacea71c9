"""The Redis contract: key schema, hash fields and states, the envelope of a task and its
signature, packs, resource classes, the connection, every Redis call (store) and the Lua
scripts.  It imports nothing else of wq-redis: managers, workers and tools all speak it.
"""
