"""Helpers that start real gateways: in-process workers and ``gateway run`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import parse_config
from gateway.process.sockets import bind_listener
from gateway.process.worker import Worker

HELLO = "Hello from the gateway\n"


def base_config(tmp_path: Path, **server: Any) -> dict[str, Any]:
    """A small valid config on ephemeral ports, access log in ``tmp_path``."""
    config: dict[str, Any] = {
        "server": {
            "listeners": [
                {"name": "public", "host": "127.0.0.1", "port": 0},
                {"name": "admin", "host": "127.0.0.1", "port": 0, "admin": True},
            ],
            "workers": 1,
            "shutdown_timeout": 5,
            "access_log": {"path": str(tmp_path / "access.log")},
        },
        "spool": {"dir": str(tmp_path / "spool")},
        "routes": [{"name": "hello", "respond": {"body": HELLO}}],
    }
    config["server"].update(server)
    return config


def with_routes(config: dict[str, Any], *routes: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    config["routes"] = list(routes)
    return config


@dataclass
class InProcessGateway:
    worker: Worker
    ports: dict[str, int]
    config_path: Path

    def url(self, path: str = "/", listener: str = "public") -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"

    def access_log(self) -> list[dict[str, Any]]:
        path = Path(self.worker.config.server.access_log.path)
        self.flush_logs()
        return [json.loads(line) for line in path.read_text().splitlines()]

    def flush_logs(self) -> None:
        self.worker.flush_access_log()


@contextlib.asynccontextmanager
async def in_process_gateway(
    config: dict[str, Any], tmp_path: Path
) -> AsyncIterator[InProcessGateway]:
    config_path = tmp_path / "gateway.json"
    config_path.write_text(json.dumps(config))
    parsed = parse_config(config_path.read_bytes(), env=os.environ)
    sockets = [(listener, bind_listener(listener)) for listener in parsed.server.listeners]
    ports = {listener.name: sock.getsockname()[1] for listener, sock in sockets}
    worker = Worker(parsed, sockets, config_path=str(config_path))
    async with worker:
        yield InProcessGateway(worker, ports, config_path)
    for _, sock in sockets:
        sock.close()


_LISTENING = re.compile(r"listening on https?://127\.0\.0\.1:(\d+) (\S+)")
_WORKER_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


@dataclass
class GatewayProcess:
    """``gateway run`` as a child process, its stderr collected line by line."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None
    _new_line: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/", listener: str = "public") -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._new_line.set()
        self._new_line.set()

    async def wait_until(self, predicate: Callable[[], bool], limit: float = 15.0) -> None:
        """Until ``predicate()`` holds, re-checked as each stderr line arrives."""
        async with asyncio.timeout(limit):
            while not predicate():
                if self._reader is not None and self._reader.done():
                    raise AssertionError("gateway exited; stderr:\n" + "\n".join(self.lines))
                self._new_line.clear()
                await self._new_line.wait()

    def matches(self, pattern: str, after: int = 0) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        return [m for line in self.lines[after:] if (m := regex.search(line))]

    async def wait_for(self, pattern: str, *, after: int = 0, limit: float = 15.0) -> re.Match[str]:
        """The first stderr line from index ``after`` on that matches ``pattern``."""
        await self.wait_until(lambda: bool(self.matches(pattern, after)), limit)
        return self.matches(pattern, after)[0]

    def worker_pids(self) -> dict[int, int]:
        """Worker slot -> pid of the newest process started in that slot."""
        pids: dict[int, int] = {}
        for line in self.lines:
            if match := _WORKER_STARTED.search(line):
                pids[int(match.group(1))] = int(match.group(2))
        return pids

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def wait(self, limit: float = 30.0) -> int:
        async with asyncio.timeout(limit):
            code = await self.process.wait()
        if self._reader is not None:
            await self._reader
        return code


async def start_process(
    config_path: Path | None,
    *,
    workers: int,
    listeners: int = 2,
    argv: Sequence[str] = (),
    cwd: Path | None = None,
) -> GatewayProcess:
    """``gateway run --config config_path``, or ``gateway *argv`` without a config path."""
    command = ("run", "--config", str(config_path)) if config_path is not None else tuple(argv)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *command, cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, so cleanup can reach every worker
    )  # fmt: skip
    gateway = GatewayProcess(process)
    gateway._reader = asyncio.ensure_future(gateway._read())
    await gateway.wait_until(
        lambda: (
            len(gateway.matches(_LISTENING.pattern)) >= listeners
            and len(gateway.matches(r"worker \d+ serving")) >= workers
        )
    )
    for match in gateway.matches(_LISTENING.pattern):
        gateway.ports[match.group(2)] = int(match.group(1))
    return gateway


async def stop_process(gateway: GatewayProcess) -> None:
    """Kill the whole process tree; print its stderr (pytest shows it when a test fails)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(gateway.process.pid, signal.SIGKILL)
    await gateway.wait()
    print("\n".join(gateway.lines))
