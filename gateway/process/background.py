"""A worker's background loops, each a task the worker keeps and cancels when it stops:
writing metrics and the access log out once a second, and noticing a supervisor that
was killed outright."""

from __future__ import annotations

import asyncio
import logging
import os

from gateway.observability.accesslog import AccessLog
from gateway.observability.metrics import FLUSH_INTERVAL, Metrics

log = logging.getLogger("gateway.process.worker")

ACCESS_LOG_FLUSH_INTERVAL = 1.0
PARENT_CHECK_INTERVAL = 1.0


async def flush_metrics(metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        try:
            metrics.flush()
        except Exception:  # never stop counting over one bad write
            log.exception("metrics flush failed")


async def flush_access_log(access_log: AccessLog, metrics: Metrics) -> None:
    loop = asyncio.get_running_loop()
    reported = 0
    while True:
        await asyncio.sleep(ACCESS_LOG_FLUSH_INTERVAL)
        # Taken on the loop, written off it: the write may block on a slow reader.
        await loop.run_in_executor(None, access_log.flush, access_log.take())
        if access_log.dropped > reported:
            metrics.access_log_dropped.inc(access_log.dropped - reported)
            reported = access_log.dropped


async def watch_parent(pid: int, stop: asyncio.Event) -> None:
    """If the supervisor is killed outright, nobody would stop this worker: notice it
    and ask for the worker's own graceful stop."""
    while os.getppid() == pid:  # noqa: ASYNC110 - no event exists for "parent died"
        await asyncio.sleep(PARENT_CHECK_INTERVAL)
    log.warning("supervisor %d is gone; shutting down", pid)
    stop.set()
