"""The supervisor process: binds the listeners, runs N workers, restarts the ones that die.

Each worker slot gets its own SO_REUSEPORT socket per listener, so the kernel spreads
connections evenly; the supervisor keeps every socket open, so connections queued for a
worker that dies wait for its replacement instead of being refused.

Signals: SIGTERM/SIGINT drain every worker (each follows ``gateway.process.worker``'s shutdown
order) and a second one kills them at once; SIGHUP validates the config file and, when
it is good, tells every worker to reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, ConfigIssue, parse_config

EXIT_CANNOT_START = 78  # gateway.process.run's; not imported, as workers' modules load lazily

log = logging.getLogger("gateway.process.supervisor")

RESTART_BACKOFF_MAX = 10.0
HEALTHY_UPTIME = 5.0  # a worker that lived this long restarts at once, not after backoff
KILL_GRACE = 5.0  # on top of server.shutdown_timeout before a draining worker is killed


@dataclass
class _Slot:
    index: int
    sockets: list[socket.socket]
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    backoff: float = 0.0
    waiter: asyncio.Task[int] | None = field(default=None, repr=False)
    cannot_start: bool = False  # its last process exited before it could serve


class Supervisor:
    """Owns the listening sockets and the worker processes of one gateway."""

    def __init__(self, config_path: str, config: Config) -> None:
        self.config_path = os.path.abspath(config_path)
        self.config = config
        self._snapshot = ""  # the last config file content that validated, for workers
        self._slots: list[_Slot] = []
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        """Serve until stopped: 0, or 2 when no worker can start with this config."""
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        # Must be set before prometheus-client is first imported, here and in the workers.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        self._snapshot = os.path.join(metrics_dir, "config.json")
        try:
            # What workers read is what the sockets are bound for.
            self.config, raw = self._validate()
            self._write_snapshot(raw)
        except ConfigError as exc:  # edited since the CLI validated it
            log.error("config changed before the workers started:\n%s", exc)
            shutil.rmtree(metrics_dir, ignore_errors=True)
            return 2
        from gateway.observability.metrics import Metrics, mark_process_dead

        self._metrics = Metrics()
        self._mark_dead = mark_process_dead
        try:
            self._bind()
            self._install_signals()
            for slot in self._slots:
                await self._spawn(slot)
            return await self._supervise()
        finally:
            for slot in self._slots:
                for sock in slot.sockets:
                    sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _bind(self) -> None:
        from gateway.process.sockets import bind_listener

        listeners = list(self.config.server.listeners)
        for index in range(self.config.server.worker_count):
            sockets = [bind_listener(listener, reuse_port=True) for listener in listeners]
            if index == 0:
                # Port 0 asks the kernel for a port; the other slots must share that one.
                listeners = [
                    listener.model_copy(update={"port": sock.getsockname()[1]})
                    for listener, sock in zip(listeners, sockets, strict=True)
                ]
                for listener in listeners:
                    role = " (admin)" if listener.admin else ""
                    host = f"[{listener.host}]" if ":" in listener.host else listener.host
                    scheme = "https" if listener.tls else "http"
                    log.info(
                        "listening on %s://%s:%d %s%s",
                        scheme, host, listener.port, listener.name, role,
                    )  # fmt: skip
            self._slots.append(_Slot(index, sockets))

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def stop(self) -> None:
        """What SIGTERM and SIGINT do (and a test can): drain every worker, killing those
        still running after 2 x shutdown_timeout + KILL_GRACE; a second time, kill now."""
        if self._stopping.is_set():
            log.warning("second stop signal: killing workers now")
            self._force.set()
        else:
            log.info("stopping: draining workers (up to %ss)", self.config.server.shutdown_timeout)
            self._stopping.set()
            # Our copies of the listening sockets go now, the workers' as they start to
            # drain: new connections are refused at once instead of waiting in a queue
            # nobody accepts from until the drain ends and the kernel resets them (F3).
            for slot in self._slots:
                for sock in slot.sockets:
                    sock.close()
        self._changed.set()

    def _validate(self) -> tuple[Config, bytes]:
        try:
            raw = Path(self.config_path).read_bytes()
        except OSError as exc:
            raise ConfigError(self.config_path, [ConfigIssue("", f"cannot read: {exc}")]) from None
        return parse_config(raw, source=self.config_path, env=os.environ), raw

    def _write_snapshot(self, raw: bytes) -> None:
        """Keep the validated bytes where workers read them (0600: they may hold secrets)."""
        tmp = self._snapshot + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        os.replace(tmp, self._snapshot)

    def _on_reload_signal(self) -> None:
        try:
            config, raw = self._validate()
            from gateway.process.sockets import sockets_changed  # imported by _bind already

            changed = sockets_changed(self.config, config)
            if changed:
                # Workers pair inherited sockets with the listeners in order: a restarted
                # one must never read listeners these sockets were not bound for.
                issue = ConfigIssue(changed, "changed: restart the gateway to apply")
                raise ConfigError(self.config_path, [issue])
        except ConfigError as exc:
            self._metrics.config_reloads.labels("failure").inc()
            log.error("config reload rejected, workers keep the current config:\n%s", exc)
            return
        self._write_snapshot(raw)
        self.config = config
        self._metrics.config_reloads.labels("success").inc()
        log.info("config reload: telling %d workers", len(self._slots))
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                slot.process.send_signal(signal.SIGHUP)

    async def _spawn(self, slot: _Slot) -> None:
        fds = [sock.fileno() for sock in slot.sockets]
        slot.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "worker",
            "--config", self.config_path,
            "--fds", ",".join(map(str, fds)),
            "--supervisor", str(os.getpid()),
            "--slot", str(slot.index),
            "--snapshot", self._snapshot,
            pass_fds=fds,
        )  # fmt: skip
        slot.started = asyncio.get_running_loop().time()  # the clock the backoff sleeps on
        slot.waiter = asyncio.ensure_future(slot.process.wait())
        slot.waiter.add_done_callback(lambda _: self._changed.set())
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    async def _supervise(self) -> int:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._stopping.is_set():
                await self._stop_all()
                return 0
            for slot in self._slots:
                if slot.waiter is not None and slot.waiter.done():
                    self._on_worker_exit(slot)
            if all(slot.cannot_start for slot in self._slots):
                # The same config fails the same way in every slot: restarting in a loop
                # with the ports open would only hide it behind connections nobody answers.
                log.error("no worker can start with this config (see above); exiting")
                self._stopping.set()
                await self._stop_all()
                return 2

    def _on_worker_exit(self, slot: _Slot) -> None:
        assert slot.process is not None and slot.waiter is not None
        pid, code = slot.process.pid, slot.waiter.result()
        slot.waiter = None
        slot.cannot_start = code == EXIT_CANNOT_START
        self._mark_dead(pid)
        uptime = asyncio.get_running_loop().time() - slot.started
        slot.backoff = (
            0.0
            if uptime >= HEALTHY_UPTIME
            else min(max(slot.backoff * 2, 0.1), RESTART_BACKOFF_MAX)
        )
        log.error(
            "worker %d (pid %d) exited with %s; restarting in %.1fs",
            slot.index,
            pid,
            code,
            slot.backoff,
        )
        self._metrics.worker_restarts.inc()
        task = asyncio.ensure_future(self._restart_later(slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart_later(self, slot: _Slot) -> None:
        await asyncio.sleep(slot.backoff)
        if not self._stopping.is_set():
            await self._spawn(slot)

    async def _stop_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        running = [s for s in self._slots if s.process is not None and s.process.returncode is None]
        for slot in running:
            assert slot.process is not None
            slot.process.send_signal(signal.SIGTERM)
        waiters = [s.waiter for s in running if s.waiter is not None]
        # A worker drains requests (shutdown_timeout), then flushes its events (the same
        # again at most): wait for both before killing, or accepted events would be lost.
        await self._wait_or_force(waiters, 2 * self.config.server.shutdown_timeout + KILL_GRACE)
        for slot in running:
            assert slot.process is not None
            if slot.process.returncode is None:
                log.warning(
                    "worker %d (pid %d) did not stop in time: killing", slot.index, slot.process.pid
                )
                with contextlib.suppress(ProcessLookupError):
                    slot.process.kill()
        await asyncio.gather(*waiters, return_exceptions=True)
        log.info("all workers stopped")

    async def _wait_or_force(self, waiters: list[asyncio.Task[int]], limit: float) -> None:
        """Until every waiter is done, ``limit`` seconds pass, or a second signal forces."""
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        pending: set[asyncio.Future[Any]] = set(waiters)
        force: asyncio.Future[Any] = asyncio.ensure_future(self._force.wait())
        try:
            while pending and not self._force.is_set() and (left := end - loop.time()) > 0:
                _, pending = await asyncio.wait(
                    pending | {force}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(force)
        finally:
            force.cancel()
