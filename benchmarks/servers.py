"""Start the gateway, nginx or Caddy on a loopback port, wait until it answers, always stop it.

Each server runs in its own process group (session), so stopping it reaches every worker
even when the leader is stuck, and a Ctrl-C in the terminal reaches only the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.configs import Site, caddyfile, gateway_config, nginx_config, shipped_config
from benchmarks.machine import Tools
from benchmarks.probe import fetch

START_TIMEOUT = 20.0
# The gateway drains for up to its shutdown_timeout (5 s in configs.py) before exiting.
STOP_TIMEOUT = 15.0


class ServerError(Exception):
    """A server exited or never answered; ``log_tail`` holds the last lines of its output."""

    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.log_tail = log_tail


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one server and how to tell that it is ready to be loaded."""

    argv: tuple[str, ...]
    ready_path: str
    ready_status: int | None = None  # None: any HTTP answer will do
    ready_log: tuple[str, int] | None = None  # a log pattern that must appear this many times
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server: the leader's pid (root of the process tree to measure) and its port."""

    kind: str
    pid: int
    port: int
    log: Path
    scheme: str = "http"

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"


def free_port() -> int:
    """An ephemeral loopback port nobody holds (bound, then released for the server to take)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Slot:
    """Where and with what budget a server runs: its port, cores, connections and work dir."""

    port: int
    workers: int
    capacity: int  # connections each worker must accept
    workdir: Path
    tools: Tools
    kafka: str | None = None  # the broker the gateway sends events to


def _gateway(site: Site, slot: Slot) -> Launch:
    path = slot.workdir / "gateway.json"
    if site.config_file is not None:
        ports = itertools.chain((slot.port,), iter(free_port, None))
        path.write_text(shipped_config(site.config_file, ports=ports, workdir=slot.workdir))
        workers = json.loads(path.read_text())["server"].get("workers") or os.cpu_count() or 1
    else:
        workers = slot.workers
        path.write_text(
            gateway_config(
                site,
                port=slot.port,
                workers=slot.workers,
                capacity=slot.capacity,
                workdir=slot.workdir,
                kafka=slot.kafka,
            )
        )
    return Launch(
        argv=(sys.executable, "-m", "gateway", "run", "--config", str(path)),
        ready_path="/_gateway/ready",
        ready_status=200,
        # Ready answers from whichever worker accepts; wait until every worker serves.
        ready_log=(r"worker \d+ serving", workers),
    )


def _nginx(site: Site, slot: Slot, *, recording: bool = False) -> Launch:
    prefix = slot.workdir / "nginx"
    prefix.mkdir()
    path, error_log = prefix / "nginx.conf", prefix / "error.log"
    config = nginx_config(
        site,
        port=slot.port,
        workers=slot.workers,
        capacity=slot.capacity,
        prefix=prefix,
        recording=recording,
    )
    path.write_text(config)
    # -e: nginx writes to its built-in error log (/var/log/nginx) until it has read the config.
    argv = (slot.tools.nginx, "-p", f"{prefix}/", "-e", str(error_log), "-c", str(path))
    return Launch(argv=argv, ready_path="/")


def _caddy(site: Site, slot: Slot) -> Launch:
    # Caddy has no connection limit to set; it needs only a home for its state files.
    home = slot.workdir / "caddy-home"
    path = slot.workdir / "Caddyfile"
    path.write_text(caddyfile(site, port=slot.port))
    env = {
        "GOMAXPROCS": str(slot.workers),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
    }
    argv = (slot.tools.caddy, "run", "--config", str(path), "--adapter", "caddyfile")
    return Launch(argv=argv, ready_path="/", env=env)


def _varnish(site: Site, slot: Slot) -> Launch:
    # -j none: no jail (no user switch); -T none: no management port. Varnish has no
    # process count to set: its worker threads use every core the others share.
    assert site.varnish_vcl is not None, "only sites with a VCL"
    path = slot.workdir / "default.vcl"
    path.write_text(site.varnish_vcl)
    argv = (
        slot.tools.varnishd, "-F", "-j", "none", "-T", "none", "-n", str(slot.workdir / "varnish"),
        "-a", f"127.0.0.1:{slot.port}", "-f", str(path), "-s", "malloc,256m",
    )  # fmt: skip
    return Launch(argv=argv, ready_path="/")


# Each writes its server's config into the slot's work directory and says how to start it.
PREPARE: dict[str, Callable[[Site, Slot], Launch]] = {
    "gateway": _gateway,
    "nginx": _nginx,
    "caddy": _caddy,
    "nginx_log": functools.partial(_nginx, recording=True),
    "varnish": _varnish,
}


@contextlib.asynccontextmanager
async def running(
    kind: str,
    site: Site,
    *,
    workers: int,
    capacity: int,
    tools: Tools,
    workdir: Path,
    kafka: str | None = None,
) -> AsyncIterator[RunningServer]:
    """Start ``kind`` serving ``site``, yield once it answers, stop its whole group on exit."""
    port = free_port()
    launch = PREPARE[kind](site, Slot(port, workers, capacity, workdir, tools, kafka))
    log = workdir / f"{kind}.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *launch.argv,
            env={**os.environ, **launch.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    scheme = "https" if site.tls is not None else "http"
    server = RunningServer(kind, process.pid, port, log, scheme)
    try:
        await _wait_ready(process, launch, server)
        yield server
    finally:
        await stop_group(process)


async def _wait_ready(
    process: asyncio.subprocess.Process, launch: Launch, server: RunningServer
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.returncode is not None:
            message = f"{server.kind} exited with {process.returncode} while starting"
            raise ServerError(message, log_tail(server))
        if _log_ready(launch, server.log):
            try:
                status = (await fetch(server.url(launch.ready_path), limit=1.0)).status
            except OSError:
                pass
            else:
                if launch.ready_status in (None, status):
                    return
        await asyncio.sleep(0.05)
    message = f"{server.kind} did not answer within {START_TIMEOUT:.0f}s"
    raise ServerError(message, log_tail(server))


def _log_ready(launch: Launch, log: Path) -> bool:
    if launch.ready_log is None:
        return True
    pattern, count = launch.ready_log
    return len(re.findall(pattern, log.read_text(errors="replace"))) >= count


def log_tail(server: RunningServer, lines: int = 10) -> str:
    """The last lines of a server's output, for a failure message on stderr."""
    return "\n".join(server.log.read_text(errors="replace").strip().splitlines()[-lines:])


async def stop_group(process: asyncio.subprocess.Process) -> None:
    """Terminate a process started in its own session, then kill whatever is left of it."""
    try:
        if process.returncode is None:
            # The leader alone: the gateway's supervisor and nginx's master stop their workers.
            process.terminate()
            async with asyncio.timeout(STOP_TIMEOUT):
                await process.wait()
    except (TimeoutError, ProcessLookupError):
        pass
    finally:
        # Whatever is left of the group (a stuck leader, orphaned workers) dies now.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
