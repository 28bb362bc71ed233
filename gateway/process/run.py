"""The worker process's entry: load the config, take the inherited sockets, serve until
SIGTERM/SIGINT, reload on SIGHUP; exit 78 when it cannot start at all."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Sequence

from gateway.config import ConfigError, ConfigIssue, load_config
from gateway.events.spool import SpoolError
from gateway.process.worker import Worker

log = logging.getLogger("gateway.worker")

# A worker that could not start (its config cannot be served here: a file, a port, a
# certificate) exits with this, sysexits' EX_CONFIG, so the supervisor can tell it
# from a crash while serving.
EXIT_CANNOT_START = 78
GC_THRESHOLDS = (50_000, 20, 20)  # young collections every 50k allocations, not 700


async def run_worker(
    config_path: str,
    fds: Sequence[int],
    supervisor_pid: int | None,
    slot: int = 0,
    *,
    snapshot: str | None = None,
) -> int:
    """Entry of a worker process: serve on inherited sockets until SIGTERM/SIGINT."""
    config = load_config(snapshot or config_path)
    sockets = [
        (listener, socket.socket(fileno=fd))
        for listener, fd in zip(config.server.listeners, fds, strict=True)
    ]
    worker = Worker(
        config, sockets, config_path=config_path, supervisor_pid=supervisor_pid, slot=slot,
        snapshot=snapshot,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop_requested.set)
    loop.add_signal_handler(signal.SIGINT, worker.stop_requested.set)
    reloads: set[asyncio.Task[list[ConfigIssue]]] = set()

    def on_sighup() -> None:
        task = loop.create_task(worker.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        await worker.start()
    except Exception as exc:
        # What the environment refused (a file, a port) is said in a line; a bug in full.
        expected = isinstance(exc, OSError | ConfigError | SpoolError)
        log.error(
            "worker %d cannot start: %s", os.getpid(), exc, exc_info=None if expected else exc
        )
        with contextlib.suppress(Exception):
            await worker.stop()
        return EXIT_CANNOT_START
    try:
        # What start-up built lives as long as the process: out of the collector's way.
        # Events queue by the thousand before Kafka takes them, and with the default
        # thresholds (700, 10, 10) the collector took ~20% of a Segment batch load, with
        # a full collection every half second; these cut CPU per batch by a quarter.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info("worker %d serving", os.getpid())
        await worker.stop_requested.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*reloads)
    finally:
        await worker.stop()
    log.info("worker %d stopped", os.getpid())
    return 0
