"""Load benchmarks: the gateway against nginx and Caddy doing the same job on loopback.

Run ``python -m benchmarks --help``. Every server, the load generator (wrk) and the
idle-connection pool run on 127.0.0.1 and are stopped when the run ends.
"""
