"""Tools around the queues: the ``wq-redis`` command line, ``status``, and the Prometheus
exporter of queue state.
"""
