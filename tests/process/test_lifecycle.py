"""``gateway run`` as a real process tree: supervisor, workers, signals, reloads."""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from gateway import __version__
from gateway.events.spool import Spool, SpoolRecord
from tests.backends import Backend, backends
from tests.client import eventually, happens
from tests.support import (
    HELLO,
    GatewayProcess,
    base_config,
    start_process,
    stop_process,
    with_routes,
)


def gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=30
    )


async def fetch(url: str, method: str = "GET") -> tuple[int, str, str]:
    """Status, body and request id, on a fresh connection each time."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, url) as resp,
    ):
        return resp.status, await resp.text(), resp.headers.get("X-Request-Id", "")


async def restart_worker(gw: GatewayProcess, slot: int) -> int:
    """SIGKILL one worker, wait until its replacement serves; the killed pid."""
    victim = gw.worker_pids()[slot]
    mark = len(gw.lines)
    os.kill(victim, signal.SIGKILL)
    await gw.wait_for(rf"worker {slot} started \(pid \d+\)", after=mark)
    await gw.wait_for(r"worker \d+ serving", after=mark)
    return victim


async def _body_is(url: str, expected: str) -> bool:
    return (await fetch(url))[1] == expected


async def _body_has(url: str, part: str) -> bool:
    return part in (await fetch(url))[1]


def write_config(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config))
    return path


def test_version_from_installed_command(gateway_bin: str) -> None:
    result = subprocess.run([gateway_bin, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout == f"gateway {__version__}\n"


def test_check_describes_a_good_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, base_config(tmp_path))
    result = gateway_cli("check", "--config", str(path))
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"{path}: OK",
        "workers: 1",
        "listeners:",
        "  public       http://127.0.0.1:0",
        "  admin        http://127.0.0.1:0  admin: health, ready, metrics, reload",
        "built-in endpoints: /_gateway/{health,ready,metrics,reload}",
        "routes:",
        "  hello        host=* path=/ -> respond 200",
        f"events: spool only; spool {tmp_path / 'spool'}/worker-N",
    ]


def test_the_shipped_container_config_checks(tmp_path: Path) -> None:
    """deploy/gateway.json, which the Dockerfile copies: valid, shared limits on Redis."""
    path = Path(__file__).parent.parent.parent / "deploy" / "gateway.json"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path)],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "GATEWAY_ADMIN_TOKEN": "t" * 32},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "events: kafka kafka:9092; spool /var/lib/gateway/spool/worker-N" in lines
    assert lines[-1] == (
        "shared rate limits: per_ip on redis://redis:6379/0 (on_error=local, timeout 20 ms)"
    )


def test_check_names_each_routes_own_kind(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    config = with_routes(
        base_config(tmp_path),
        {"name": "files", "match": {"path_prefix": "/f"},
         "static": {"root": str(tmp_path / "site")}},
        {"name": "go", "match": {"path_prefix": "/go"}, "redirect": {"adhoc": True}},
        {"name": "app", "match": {"path_prefix": "/app"},
         "proxy": {"upstreams": ["http://127.0.0.1:9"], "policy": "least_conn"}},
        {"name": "sdk", "match": {"path_prefix": "/v1"}, "segment": {}},
        {"name": "t", "match": {"path_prefix": "/t"}, "delivery": "fast",
         "collect": {"endpoints": ["tr", "img"]}},
        {"name": "rill", "match": {"path_prefix": "/intake"},
         "intake": {"users": [{"username": "rill", "password": "s3cret-intake"}]}},
    )  # fmt: skip
    config["redirects"] = {"file": str(tmp_path / "links.jsonl"), "signing_keys": ["k" * 32]}
    config["tracking"] = {"write_keys": ["wk"]}
    result = gateway_cli("check", "--config", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stderr
    routes = [line for line in result.stdout.splitlines() if " -> " in line]
    assert routes == [
        f"  files        host=* path=/f -> static {tmp_path / 'site'}",
        "  go           host=* path=/go -> redirect links and signed ad-hoc /r",
        "  app          host=* path=/app -> proxy http://127.0.0.1:9 (least_conn)",
        "  sdk          host=* path=/v1 -> segment API (durable)",
        "  t            host=* path=/t -> collect tr,img (fast)",
        "  rill         host=* path=/intake -> rill intake (durable, 1 user(s))",
    ]


def test_spool_command_prints_held_events(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    spool = Spool(tmp_path / "spool" / "worker-1", 1 << 20, 1 << 30)
    spool.open()
    spool.append(
        [
            SpoolRecord("events", b"k", b'{"event_id":"a"}'),
            SpoolRecord("events", b"k", b'{"event_id":"b"}'),
        ]
    )
    spool.close()
    result = gateway_cli("spool", "--config", str(write_config(tmp_path, config)))
    assert (result.returncode, result.stdout) == (0, '{"event_id":"a"}\n{"event_id":"b"}\n')


def test_check_lists_every_error_and_exits_2(tmp_path: Path) -> None:
    config = base_config(tmp_path, workers=0)
    config["routes"] = [{"name": "r", "match": {"path_prefix": "x"}, "respond": {}}]
    path = write_config(tmp_path, config)
    result = gateway_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"gateway: invalid config {path}: 2 error(s)",
        "  server.workers: Input should be greater than or equal to 1",
        '  routes[0].match.path_prefix: must start with "/"',
    ]


def test_run_with_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["server"]["listeners"][0]["port"] = "80"
    result = gateway_cli("run", "--config", str(write_config(tmp_path, config)))
    assert result.returncode == 2
    assert "server.listeners[0].port: Input should be a valid integer" in result.stderr


async def test_run_exits_2_when_no_worker_can_start(tmp_path: Path) -> None:
    # Fault run F5: workers that fail at start-up were restarted forever, ports open.
    # Here the spool is held by another process (a second gateway on the same dir).
    config = base_config(tmp_path, workers=2)
    held = []
    for slot in range(2):
        spool = Spool(tmp_path / "spool" / f"worker-{slot}", 1 << 20, 1 << 30)
        spool.open()
        held.append(spool)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "--config", str(write_config(tmp_path, config)),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(20):
            _, stderr = await process.communicate()
    finally:
        for spool in held:
            spool.close()
    log = stderr.decode()
    assert process.returncode == 2, log
    assert log.count("cannot start: ") >= 2
    assert "is in use by another process" in log
    assert "no worker can start with this config (see above); exiting" in log
    assert "Traceback" not in log


def test_run_with_missing_config_file(tmp_path: Path) -> None:
    result = gateway_cli("run", "--config", str(tmp_path / "nope.json"))
    assert result.returncode == 2
    assert "cannot read: No such file or directory" in result.stderr


def proxy_to(tmp_path: Path, backend: Backend, **server: object) -> Path:
    """A gateway config proxying everything to ``backend``, written to tmp_path."""
    route = {"name": "app", "proxy": {"upstreams": [backend.url]}}
    return write_config(tmp_path, with_routes(base_config(tmp_path, **server), route))


async def refused(gw: GatewayProcess) -> bool:
    """Whether a new connection is refused: no listening socket left, the worker's drain
    has begun (the supervisor closes its copies as the signal arrives). A connection
    that is taken asks for health and reads the answer, leaving nothing for the drain."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
    except ConnectionRefusedError:
        return True
    writer.write(b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await reader.read()
    writer.close()
    return False


UPLOAD_HEAD = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab"


async def test_sigterm_drains_an_in_flight_request(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        gw = await start_process(proxy_to(tmp_path, a), workers=1)
        try:
            # An upload still arriving when SIGTERM lands is in flight: it must complete.
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
            writer.write(UPLOAD_HEAD)
            await happens(a.arrived, "the upload reaches the backend")
            gw.signal(signal.SIGTERM)
            await eventually(lambda: refused(gw), "the worker stops listening to drain")
            writer.write(b"cd")
            async with asyncio.timeout(5):
                reply = await reader.read()
            writer.close()
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"\r\nConnection: close\r\n" in reply
            assert reply.endswith(b'{"received": 4}')
            assert await gw.wait() == 0
        finally:
            await stop_process(gw)


async def test_requests_queued_when_sigterm_lands_are_all_answered(tmp_path: Path) -> None:
    """Issue 27, D8: requests whose connections the kernel took before the stop began
    are answered (Connection: close), not reset with the listening socket. The workers
    are paused while the requests queue and SIGTERM arrives, so the stop and the queued
    connections meet in the same turn of their loops."""
    config = base_config(tmp_path, workers=2)
    gw = await start_process(write_config(tmp_path, config), workers=2)
    try:
        loop = asyncio.get_running_loop()
        address = ("127.0.0.1", gw.ports["public"])
        workers = list(gw.worker_pids().values())
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        socks = [socket.create_connection(address) for _ in range(100)]
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        gw.signal(signal.SIGTERM)
        await gw.wait_for("stopping: draining workers")
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        replies = await loop.run_in_executor(None, read_until_closed, socks)
        assert await gw.wait() == 0
    finally:
        await stop_process(gw)
    assert [r for r in replies if not r.endswith(HELLO.encode())] == []
    assert all(r.startswith(b"HTTP/1.1 200 OK\r\n") for r in replies)
    assert all(b"\r\nConnection: close\r\n" in r for r in replies)


def read_until_closed(socks: list[socket.socket], limit: float = 10.0) -> list[bytes]:
    """What each socket receives until the gateway closes it (at most ``limit`` s)."""
    replies = {sock: b"" for sock in socks}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + limit
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                replies[sock] += chunk
                if not chunk:
                    selector.unregister(sock)
    for sock in socks:
        sock.close()
    return list(replies.values())


async def test_a_draining_gateway_refuses_new_connections_at_once(tmp_path: Path) -> None:
    # Fault run F3: connections opened during a drain were accepted by the kernel, never
    # answered, then reset when the drain ended; a load balancer saw timeouts.
    async with backends("a") as (a,):
        gw = await start_process(proxy_to(tmp_path, a, workers=2, shutdown_timeout=10), workers=2)
        try:
            # Answered once the body is in: this answer is written during the drain.
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
            writer.write(UPLOAD_HEAD)
            await happens(a.arrived, "the upload reaches the backend")
            gw.signal(signal.SIGTERM)
            await eventually(lambda: refused(gw), "the workers stop listening to drain")
            for _ in range(5):
                try:
                    async with asyncio.timeout(2):
                        await asyncio.open_connection("127.0.0.1", gw.ports["public"])
                except ConnectionRefusedError:
                    continue
                raise AssertionError("a connection opened during the drain was accepted")
            writer.write(b"cd")  # the request in flight still completes, and says it is the last
            async with asyncio.timeout(5):
                reply = await reader.read()
            writer.close()
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"\r\nConnection: close\r\n" in reply
            assert await gw.wait() == 0
        finally:
            await stop_process(gw)


async def test_second_sigint_forces_exit(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        gw = await start_process(proxy_to(tmp_path, a, shutdown_timeout=30), workers=1)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
            writer.write(UPLOAD_HEAD)  # in flight, and never finished: the drain would wait 30 s
            await happens(a.arrived, "the upload reaches the backend")
            gw.signal(signal.SIGINT)
            await gw.wait_for("stopping: draining workers")
            gw.signal(signal.SIGINT)
            assert await gw.wait(limit=20) == 0
            assert gw.matches("second stop signal: killing workers now")
            assert gw.matches(r"worker 0 \(pid \d+\) did not stop in time: killing")
            writer.close()
        finally:
            await stop_process(gw)


async def test_killed_worker_is_restarted(tmp_path: Path) -> None:
    gw = await start_process(write_config(tmp_path, base_config(tmp_path, workers=2)), workers=2)
    try:
        victim = await restart_worker(gw, 0)
        assert gw.worker_pids()[0] != victim
        for _ in range(10):
            assert (await fetch(gw.url("/")))[:2] == (200, HELLO)
        _, metrics, _ = await fetch(gw.url("/_gateway/metrics", listener="admin"))
        assert "gateway_worker_restarts_total 1.0" in metrics
    finally:
        await stop_process(gw)


async def test_worker_restarted_after_a_broken_edit_serves_the_last_valid_config(
    tmp_path: Path,
) -> None:
    # The file is broken on disk (no SIGHUP yet) when a worker dies: its replacement
    # starts from the supervisor's copy of the config that last validated.
    config = base_config(tmp_path, workers=2)
    path = write_config(tmp_path, config)
    gw = await start_process(path, workers=2)
    try:
        path.write_text('{"server": {"listeners": []}, "routes": 5}')
        await restart_worker(gw, 1)
        for _ in range(10):
            assert (await fetch(gw.url("/")))[:2] == (200, HELLO)
        # A reload of the broken file is refused; a fixed file is taken.
        status, body, _ = await fetch(gw.url("/_gateway/reload", listener="admin"), "POST")
        assert status == 400 and "routes" in body
        config["routes"][0]["respond"]["body"] = "changed\n"  # type: ignore[index]
        write_config(tmp_path, config)
        status, _, _ = await fetch(gw.url("/_gateway/reload", listener="admin"), "POST")
        assert status == 202
        await eventually(lambda: _body_is(gw.url("/"), "changed\n"), "/ answers the reloaded body")
    finally:
        await stop_process(gw)


async def test_a_reload_that_changes_the_listeners_is_refused(tmp_path: Path) -> None:
    # Workers pair the sockets they inherit with the listeners in order: a config with
    # other listeners must not reach one, even after a restart.
    config = base_config(tmp_path, workers=2)
    path = write_config(tmp_path, config)
    gw = await start_process(path, workers=2)
    try:
        config["server"]["listeners"].reverse()  # type: ignore[index]
        write_config(tmp_path, config)
        status, body, _ = await fetch(gw.url("/_gateway/reload", listener="admin"), "POST")
        assert status == 400
        assert "server.listeners: changed: restart the gateway to apply" in body
        mark = len(gw.lines)
        gw.signal(signal.SIGHUP)
        await gw.wait_for("server.listeners: changed: restart the gateway to apply", after=mark)
        await restart_worker(gw, 0)
        for _ in range(10):
            assert (await fetch(gw.url("/")))[:2] == (200, HELLO)
        assert (await fetch(gw.url("/_gateway/metrics")))[0] == 404  # still not public
    finally:
        await stop_process(gw)


async def test_metrics_add_up_across_workers(tmp_path: Path) -> None:
    gw = await start_process(write_config(tmp_path, base_config(tmp_path, workers=2)), workers=2)
    try:
        prefixes = set()
        for _ in range(40):
            status, _, request_id = await fetch(gw.url("/_gateway/nothing"))
            assert status == 404
            prefixes.add(request_id[:10])  # the per-process part of the id
        assert len(prefixes) == 2, "requests should have reached both workers"
        line = (
            'gateway_requests_total{kind="gateway",method="GET",route="_gateway",'
            'status_class="4xx"} 40.0'
        )
        # The scraped worker's counts are current; the other's follow within a second.
        metrics = gw.url("/_gateway/metrics", listener="admin")
        await eventually(lambda: _body_has(metrics, line), f"metrics show {line!r}")
    finally:
        await stop_process(gw)


async def test_sighup_with_bad_file_keeps_serving_old_config(tmp_path: Path) -> None:
    config = base_config(tmp_path, workers=2)
    path = write_config(tmp_path, config)
    gw = await start_process(path, workers=2)
    try:
        path.write_text('{"server": {"listeners": []}, "routes": 5}')
        mark = len(gw.lines)
        gw.signal(signal.SIGHUP)
        await gw.wait_for("config reload rejected", after=mark)
        assert gw.matches(r"server.listeners: Tuple should have at least 1 item", after=mark)
        assert (await fetch(gw.url("/")))[:2] == (200, HELLO)

        path.write_text(json.dumps(with_routes(config, {"name": "v2", "respond": {"body": "v2"}})))
        gw.signal(signal.SIGHUP)
        await gw.wait_until(lambda: len(gw.matches(r"config reloaded \(generation 2\)")) == 2)
        for _ in range(10):
            assert (await fetch(gw.url("/")))[:2] == (200, "v2")
        _, metrics, _ = await fetch(gw.url("/_gateway/metrics", listener="admin"))
        assert 'gateway_config_reloads_total{result="failure"} 1.0' in metrics
        assert 'gateway_config_reloads_total{result="success"} 1.0' in metrics
    finally:
        await stop_process(gw)


async def test_admin_reload_endpoint_reloads_every_worker(tmp_path: Path) -> None:
    config = base_config(tmp_path, workers=2)
    path = write_config(tmp_path, config)
    gw = await start_process(path, workers=2)
    try:
        path.write_text(json.dumps(with_routes(config, {"name": "v2", "respond": {"body": "v2"}})))
        url = gw.url("/_gateway/reload", listener="admin")
        async with aiohttp.ClientSession() as session, session.post(url) as resp:
            assert (resp.status, await resp.json()) == (202, {"status": "reloading"})
        await gw.wait_until(lambda: len(gw.matches(r"config reloaded \(generation 2\)")) == 2)
        for _ in range(10):
            assert (await fetch(gw.url("/")))[:2] == (200, "v2")
    finally:
        await stop_process(gw)


async def test_workers_exit_when_supervisor_is_killed(tmp_path: Path) -> None:
    gw = await start_process(write_config(tmp_path, base_config(tmp_path)), workers=1)
    worker = gw.worker_pids()[0]
    gw.signal(signal.SIGKILL)
    assert await gw.wait() == -signal.SIGKILL

    async def gone() -> bool:
        return not _alive(worker)

    await eventually(gone, f"worker {worker} exits on its own")
    assert gw.matches(r"supervisor \d+ is gone; shutting down")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes: check its state.
    status = Path(f"/proc/{pid}/stat").read_text()
    return re.search(r"\) Z ", status) is None
