"""The in-process server: routing, built-in endpoints, limits, errors, access log."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.observability.health import CheckResult
from gateway.request.router import HostMatcher, Router, RouteRule
from gateway.request.runtime import ActiveRoute
from tests.client import fetch
from tests.clock import settles
from tests.support import HELLO, base_config, in_process_gateway, with_routes


async def post(url: str, **kwargs: Any) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.post(url, **kwargs) as resp:
        return resp.status, await resp.read()


async def raw_exchange(port: int, data: bytes, read_limit: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(read_limit):
            return await reader.read()
    finally:
        writer.close()


async def test_respond_route_answers_exact_bytes(tmp_path: Path) -> None:
    config = with_routes(
        base_config(tmp_path),
        {"name": "hi", "respond": {"status": 201, "body": "hi\n", "headers": {"X-A": "1"}}},
    )
    async with in_process_gateway(config, tmp_path) as gw:
        status, headers, body = await fetch(gw.url("/any/path"))
    assert (status, body) == (201, b"hi\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["X-A"] == "1"
    assert headers["Content-Length"] == "3"


async def test_routes_match_host_and_prefix_in_order(tmp_path: Path) -> None:
    config = with_routes(
        base_config(tmp_path),
        {"name": "api", "match": {"hosts": ["api.example.com"]}, "respond": {"body": "api"}},
        {"name": "docs", "match": {"path_prefix": "/docs"}, "respond": {"body": "docs"}},
    )
    async with in_process_gateway(config, tmp_path) as gw:
        assert (await fetch(gw.url("/docs"), headers={"Host": "API.example.com:80"}))[2] == b"api"
        assert (await fetch(gw.url("/docs/x"), headers={"Host": "www.example.com"}))[2] == b"docs"
        status, headers, body = await fetch(gw.url("/docsx"), headers={"Host": "www.example.com"})
    assert status == 404
    assert body == b"404 Not Found: no route for this host and path\n"
    assert headers["X-Request-Id"]


async def test_health_and_ready(tmp_path: Path) -> None:
    async with in_process_gateway(base_config(tmp_path), tmp_path) as gw:
        status, _, body = await fetch(gw.url("/_gateway/health"))
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        status, headers, body = await fetch(gw.url("/_gateway/ready"))
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert json.loads(body) == {
        "status": "ready",
        "state": "serving",
        "checks": {"events": {"ok": True, "detail": "spool only (no kafka configured)"}},
    }


async def test_ready_is_503_when_a_check_fails(tmp_path: Path) -> None:
    async with in_process_gateway(base_config(tmp_path), tmp_path) as gw:
        gw.worker.readiness.add_check("sink", lambda: CheckResult(False, "broker down"))
        status, _, body = await fetch(gw.url("/_gateway/ready"))
    assert status == 503
    assert json.loads(body) == {
        "status": "not ready",
        "state": "serving",
        "checks": {
            "events": {"ok": True, "detail": "spool only (no kafka configured)"},
            "sink": {"ok": False, "detail": "broker down"},
        },
    }


async def test_builtin_endpoint_rejects_wrong_method(tmp_path: Path) -> None:
    async with (
        in_process_gateway(base_config(tmp_path), tmp_path) as gw,
        aiohttp.ClientSession() as session,
        session.post(gw.url("/_gateway/health")) as resp,
    ):
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET, HEAD"
        assert await resp.text() == "405 Method Not Allowed: use GET or HEAD\n"


async def test_metrics_only_on_admin_listener_by_default(tmp_path: Path) -> None:
    async with in_process_gateway(base_config(tmp_path), tmp_path) as gw:
        assert (await fetch(gw.url("/_gateway/metrics")))[0] == 404
        assert (await fetch(gw.url("/_gateway/reload")))[0] == 404
        status, headers, _ = await fetch(gw.url("/_gateway/metrics", listener="admin"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")


async def test_public_metrics_option(tmp_path: Path) -> None:
    async with in_process_gateway(base_config(tmp_path, public_metrics=True), tmp_path) as gw:
        assert (await fetch(gw.url("/_gateway/metrics")))[0] == 200


async def test_metrics_count_requests_by_route_method_and_status_class(tmp_path: Path) -> None:
    async with in_process_gateway(base_config(tmp_path), tmp_path) as gw:
        for _ in range(3):
            await fetch(gw.url("/"))
        async with (
            aiohttp.ClientSession() as session,
            session.request("PROPFIND", gw.url("/")) as r,
        ):
            assert r.status == 200
        _, _, body = await fetch(gw.url("/_gateway/metrics", listener="admin"))
    text = body.decode()
    assert (
        'gateway_requests_total{kind="respond",method="GET",route="hello",status_class="2xx"} 3.0'
        in text
    )
    assert (
        'gateway_requests_total{kind="respond",method="OTHER",route="hello",status_class="2xx"} 1.0'
        in text
    )
    assert 'gateway_request_duration_seconds_count{kind="respond",route="hello"} 4.0' in text
    assert "gateway_open_connections 1.0" in text


async def test_body_over_route_limit_is_413_before_reading(tmp_path: Path) -> None:
    config = with_routes(base_config(tmp_path), {"name": "r", "max_body_bytes": 10, "respond": {}})
    async with in_process_gateway(config, tmp_path) as gw:
        # Announce 1 MB but send nothing: the answer must not wait for the body.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        async with asyncio.timeout(3):
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(67)
        writer.close()
        await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert b"\r\nConnection: close\r\n" in head
    assert body == b"413 Request Entity Too Large: request body is larger than 10 bytes\n"


async def test_chunked_body_over_limit_is_413(tmp_path: Path) -> None:
    config = with_routes(base_config(tmp_path), {"name": "r", "max_body_bytes": 10, "respond": {}})
    async with in_process_gateway(config, tmp_path) as gw, aiohttp.ClientSession() as session:

        async def body() -> object:
            for _ in range(4):
                yield b"x" * 5

        async with session.post(gw.url("/"), data=body()) as resp:
            assert resp.status == 413
        async with session.post(gw.url("/"), data=b"x" * 10) as resp:
            assert resp.status == 200


async def test_oversized_header_is_431(tmp_path: Path) -> None:
    async with in_process_gateway(base_config(tmp_path), tmp_path) as gw:
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
        reply = await raw_exchange(gw.ports["public"], head)
    assert reply.startswith(b"HTTP/1.0 431 Request Header Fields Too Large\r\n")


async def test_too_many_headers_is_431(tmp_path: Path) -> None:
    config = base_config(tmp_path, limits={"max_headers": 10})
    async with in_process_gateway(config, tmp_path) as gw:
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(20))
        reply = await raw_exchange(
            gw.ports["public"], b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"
        )
    assert reply.startswith(b"HTTP/1.0 431 Request Header Fields Too Large\r\n")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",
    ],
    ids=["request-line", "duplicate-content-length", "space-in-name", "obs-fold"],
)
async def test_malformed_requests_get_400_and_worker_keeps_serving(
    tmp_path: Path, request_bytes: bytes
) -> None:
    async with in_process_gateway(base_config(tmp_path), tmp_path) as gw:
        reply = await raw_exchange(gw.ports["public"], request_bytes)
        # aiohttp answers an unparsable request as HTTP/1.0: it has no version to echo.
        assert reply.startswith(b"HTTP/1.0 400 Bad Request\r\n")
        assert (await fetch(gw.url("/")))[2] == HELLO.encode()


async def test_slow_header_connection_is_cut(tmp_path: Path) -> None:
    config = base_config(tmp_path, timeouts={"read_header": 0.3})
    async with in_process_gateway(config, tmp_path) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()


async def test_idle_keepalive_connection_is_closed(tmp_path: Path) -> None:
    config = base_config(tmp_path, timeouts={"keepalive": 0.3})
    async with in_process_gateway(config, tmp_path) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        await reader.readexactly(len(HELLO))
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()


async def test_connections_over_cap_get_503(tmp_path: Path) -> None:
    config = base_config(tmp_path, limits={"max_connections": 2})
    async with in_process_gateway(config, tmp_path) as gw:
        port = gw.ports["public"]
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]

        def open_now() -> bool:
            return b"\ngateway_open_connections 2.0\n" in gw.worker.metrics.render()

        await settles(open_now, "both held connections accepted")
        reply = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 1\r\n" in reply
        for _, writer in held:
            writer.close()
        closed = b"\ngateway_open_connections 0.0\n"
        await settles(lambda: closed in gw.worker.metrics.render(), "the held ones closed")
        assert (await fetch(gw.url("/")))[0] == 200
        _, _, body = await fetch(gw.url("/_gateway/metrics", listener="admin"))
    assert "gateway_rejected_connections_total 1.0" in body.decode()


async def test_internal_error_is_500_with_request_id_and_serving_goes_on(tmp_path: Path) -> None:
    async def broken(request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        raise RuntimeError("bug")

    async with in_process_gateway(base_config(tmp_path), tmp_path) as gw:
        runtime = gw.worker.holder.current
        boom = RouteRule(HostMatcher.of([]), "/boom", ActiveRoute("boom", 10, broken))
        gw.worker.holder.current = dataclasses.replace(runtime, router=Router([boom]))
        status, headers, body = await fetch(gw.url("/boom"))
        request_id = headers["X-Request-Id"]
        assert status == 500
        assert (
            body == f"500 Internal Server Error: internal error, request id {request_id}\n".encode()
        )
        gw.worker.holder.current = runtime
        assert (await fetch(gw.url("/")))[0] == 200


async def test_access_log_line(tmp_path: Path) -> None:
    async with in_process_gateway(base_config(tmp_path), tmp_path) as gw:
        await fetch(gw.url("/x?y=1"), headers={"User-Agent": "t/1"})
        entries = gw.access_log()
    assert len(entries) == 1
    entry = entries[0]
    assert set(entry) == {
        "time", "remote_ip", "client_ip", "method", "host", "uri", "proto", "status",
        "size", "bytes_sent", "duration", "route", "request_id", "user_agent", "trace_id",
    }  # fmt: skip
    assert entry["method"] == "GET"
    assert entry["uri"] == "/x?y=1"
    assert entry["status"] == 200
    assert entry["size"] == len(HELLO)
    assert entry["bytes_sent"] > len(HELLO)
    assert entry["route"] == "hello"
    assert entry["remote_ip"] == entry["client_ip"] == "127.0.0.1"
    assert entry["proto"] == "HTTP/1.1"
    assert entry["user_agent"] == "t/1"
    assert entry["host"] == f"127.0.0.1:{gw.ports['public']}"
    assert entry["time"].endswith("Z")
    assert 0 <= entry["duration"] < 5


async def test_access_log_redacts_credentials(tmp_path: Path) -> None:
    config = base_config(tmp_path, access_log={"path": str(tmp_path / "a.log"), "headers": True})
    async with in_process_gateway(config, tmp_path) as gw:
        await fetch(
            gw.url("/"), headers={"Authorization": "Bearer t0k", "Cookie": "sid=abc", "X-Ok": "v"}
        )
        entry = gw.access_log()[0]
    assert entry["headers"]["Authorization"] == "REDACTED"
    assert entry["headers"]["Cookie"] == "REDACTED"
    assert entry["headers"]["X-Ok"] == "v"
    assert "t0k" not in json.dumps(entry)


async def test_access_log_can_be_turned_off(tmp_path: Path) -> None:
    config = base_config(tmp_path, access_log={"path": str(tmp_path / "a.log"), "enabled": False})
    async with in_process_gateway(config, tmp_path) as gw:
        await fetch(gw.url("/"))
        assert gw.access_log() == []


async def test_access_log_client_ip_through_trusted_proxy(tmp_path: Path) -> None:
    config = base_config(tmp_path, trusted_proxies=["127.0.0.0/8"])
    async with in_process_gateway(config, tmp_path) as gw:
        await fetch(gw.url("/"), headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.4"})
        entry = gw.access_log()[0]
    assert (entry["remote_ip"], entry["client_ip"]) == ("127.0.0.1", "198.51.100.4")


async def test_reload_endpoint_swaps_config(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    async with in_process_gateway(config, tmp_path) as gw:
        new = with_routes(config, {"name": "v2", "respond": {"body": "v2"}})
        gw.config_path.write_text(json.dumps(new))
        status, body = await post(gw.url("/_gateway/reload", listener="admin"))
        assert (status, json.loads(body)) == (200, {"status": "reloaded"})
        assert (await fetch(gw.url("/")))[2] == b"v2"
        _, _, body = await fetch(gw.url("/_gateway/metrics", listener="admin"))
    assert 'gateway_config_reloads_total{result="success"} 1.0' in body.decode()


async def test_reload_with_bad_file_keeps_old_config(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    async with in_process_gateway(config, tmp_path) as gw:
        bad = with_routes(config, {"name": "v2", "respond": {"status": "200"}})
        gw.config_path.write_text(json.dumps(bad))
        status, body = await post(gw.url("/_gateway/reload", listener="admin"))
        assert status == 400
        assert json.loads(body) == {
            "status": "rejected",
            "errors": ["routes[0].respond.status: Input should be a valid integer"],
        }
        assert (await fetch(gw.url("/")))[2] == HELLO.encode()


async def test_shutdown_lets_in_flight_request_finish(tmp_path: Path) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        started.set()
        await release.wait()
        return web.Response(text="done")

    async with in_process_gateway(base_config(tmp_path), tmp_path) as gw:
        runtime = gw.worker.holder.current
        rule = RouteRule(HostMatcher.of([]), "/", ActiveRoute("slow", 10, slow))
        gw.worker.holder.current = dataclasses.replace(runtime, router=Router([rule]))
        in_flight = asyncio.ensure_future(fetch(gw.url("/")))
        await started.wait()
        stopping = asyncio.ensure_future(gw.worker.stop())
        await settles(
            lambda: gw.worker.readiness.report()[1]["state"] == "draining", "the worker drains"
        )
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(gw.url("/_gateway/health"))
        release.set()
        status, _, body = await in_flight
        await stopping
    assert (status, body) == (200, b"done")


async def _until_closed(sock: socket.socket) -> bytes:
    loop, received = asyncio.get_running_loop(), b""
    sock.setblocking(False)
    async with asyncio.timeout(5):
        while chunk := await loop.sock_recv(sock, 65536):
            received += chunk
    return received


async def test_requests_sent_just_before_the_stop_are_answered(tmp_path: Path) -> None:
    """Issue 27, D8: connections queued in the kernel and keep-alive connections whose
    next request has arrived but is not yet read, when the stop begins, are answered
    (with Connection: close); a connection that sent nothing is closed at its head
    deadline."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    config = base_config(tmp_path, timeouts={"read_header": 0.5})
    async with in_process_gateway(config, tmp_path) as gw:
        address = ("127.0.0.1", gw.ports["public"])
        with contextlib.ExitStack() as stack:

            def connect() -> socket.socket:
                return stack.enter_context(socket.create_connection(address))

            kept = [connect() for _ in range(5)]
            for sock in kept:
                sock.sendall(request)
                assert (await _until_answered(sock)).endswith(HELLO.encode())
            silent = connect()
            # Blocking connects and writes: the kernel queues them, the loop has not run.
            queued = [connect() for _ in range(20)]
            for sock in kept + queued:
                sock.sendall(request)
            await gw.worker.stop()
            replies = [await _until_closed(sock) for sock in [*kept, *queued, silent]]
    answered = [r for r in replies[:-1] if r.startswith(b"HTTP/1.1 200 OK\r\n")]
    assert len(answered) == 25
    assert all(b"\r\nConnection: close\r\n" in r and r.endswith(HELLO.encode()) for r in answered)
    assert replies[-1] == b""


async def _until_answered(sock: socket.socket) -> bytes:
    loop, received = asyncio.get_running_loop(), b""
    sock.setblocking(False)
    async with asyncio.timeout(5):
        while not received.endswith(HELLO.encode()):
            received += await loop.sock_recv(sock, 65536)
    sock.setblocking(True)
    return received


async def test_shutdown_cancels_requests_past_the_timeout(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def stuck(request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        started.set()
        await asyncio.sleep(60)
        return web.Response(text="never")

    config = base_config(tmp_path, shutdown_timeout=0.2)
    async with in_process_gateway(config, tmp_path) as gw:
        runtime = gw.worker.holder.current
        rule = RouteRule(HostMatcher.of([]), "/", ActiveRoute("stuck", 10, stuck))
        gw.worker.holder.current = dataclasses.replace(runtime, router=Router([rule]))
        in_flight = asyncio.ensure_future(fetch(gw.url("/")))
        await started.wait()
        async with asyncio.timeout(3):
            await gw.worker.stop()
        with pytest.raises(aiohttp.ClientError):
            await in_flight


async def test_tests_run_on_the_production_event_loop() -> None:
    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_server_header_names_the_product_not_its_versions(tmp_path: Path) -> None:
    async with in_process_gateway(base_config(tmp_path), tmp_path) as gw:
        async with aiohttp.ClientSession() as session:
            for url in (gw.url("/"), gw.url("/nope/%2e%2e/x"), gw.url("/_gateway/health")):
                async with session.get(url) as resp:
                    assert resp.headers["Server"] == "edge-gateway", url
