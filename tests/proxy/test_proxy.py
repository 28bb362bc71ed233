"""Reverse proxy against real backends: bytes, headers, balancing, health, failures."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.backends import backends, raw_backend, read_head, recording_backend, unused_port
from tests.client import eventually, happens
from tests.support import base_config, in_process_gateway, with_routes


def proxy_config(tmp_path: Path, upstreams: list[str], **proxy: Any) -> dict[str, Any]:
    route = {"name": "app", "proxy": {"upstreams": upstreams, **proxy}}
    return with_routes(base_config(tmp_path), route)


async def fetch(url: str, method: str = "GET", **kwargs: Any) -> tuple[int, Any, bytes]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, url, **kwargs) as resp,
    ):
        return resp.status, resp.headers, await resp.read()


async def test_pass_through_bytes_and_forwarding_headers(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        async with in_process_gateway(proxy_config(tmp_path, [a.url]), tmp_path) as gw:
            status, headers, body = await fetch(
                gw.url("/some/path%2Fx?q=1&r=%20"),
                headers={
                    "Host": "app.example.com",
                    "Connection": "X-Hop",
                    "X-Hop": "drop me",
                    "X-Forwarded-For": "6.6.6.6",
                    "X-Keep": "kept",
                },
            )
    assert status == 200
    echoed = json.loads(body)
    sent = {k.lower(): v for k, v in echoed["headers"]}
    assert echoed["path"] == "/some/path%2Fx?q=1&r=%20"
    assert sent["host"] == "app.example.com"
    assert sent["x-keep"] == "kept"
    assert "x-hop" not in sent  # named in Connection: hop-by-hop
    # The client is not a trusted proxy: its X-Forwarded-For is replaced, not extended.
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-host"] == "app.example.com"
    assert headers["Content-Type"] == "application/json; charset=utf-8"


async def test_trusted_proxy_chain_is_extended(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        config = proxy_config(tmp_path, [a.url], forwarded=True, via=True)
        config["server"]["trusted_proxies"] = ["127.0.0.1/32"]
        async with in_process_gateway(config, tmp_path) as gw:
            _, _, body = await fetch(
                gw.url("/"), headers={"X-Forwarded-For": "198.51.100.1", "Host": "h"}
            )
    sent = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert sent["x-forwarded-for"] == "198.51.100.1, 127.0.0.1"
    assert sent["forwarded"] == 'for=127.0.0.1;proto=http;host="h"'
    assert sent["via"] == "1.1 edge-gateway"


async def test_response_headers_keep_every_set_cookie_and_drop_hop_by_hop(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        async with in_process_gateway(proxy_config(tmp_path, [a.url]), tmp_path) as gw:
            status, headers, body = await fetch(gw.url("/cookies"))
    assert (status, body) == (200, b"cookies")
    assert headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert "X-Secret" not in headers


@pytest.mark.parametrize(
    ("policy", "spread"),
    # random_two on one request at a time: both idle, the first drawn of each pair wins
    # (the draws of random.Random(28), the same on every run).
    [("round_robin", [10, 10]), ("least_conn", [10, 10]), ("random_two", [12, 8])],
)
async def test_load_is_spread_over_targets(tmp_path: Path, policy: str, spread: list[int]) -> None:
    async with backends("a", "b") as pool:
        config = proxy_config(tmp_path, [b.url for b in pool], policy=policy)
        async with in_process_gateway(config, tmp_path) as gw:
            (group,) = gw.worker.holder.current.upstream_groups
            group.balancer.rng = random.Random(28)
            for _ in range(20):
                assert (await fetch(gw.url("/")))[0] == 200
    assert [b.hits for b in pool] == spread


async def test_header_hash_is_sticky(tmp_path: Path) -> None:
    async with backends("a", "b", "c") as pool:
        config = proxy_config(
            tmp_path, [b.url for b in pool], policy="header_hash", hash_header="X-User"
        )
        async with in_process_gateway(config, tmp_path) as gw:
            seen: dict[str, set[str]] = {}
            for user in ("u1", "u2", "u3", "u4"):
                for _ in range(3):
                    _, _, body = await fetch(gw.url("/"), headers={"X-User": user})
                    seen.setdefault(user, set()).add(json.loads(body)["backend"])
    assert all(len(backs) == 1 for backs in seen.values())


async def test_dead_target_is_retried_then_marked_down(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        dead = f"http://127.0.0.1:{unused_port()}"
        config = proxy_config(
            tmp_path, [dead, a.url], passive_health={"failures": 1, "cooldown": 60}
        )
        async with in_process_gateway(config, tmp_path) as gw:
            assert [(await fetch(gw.url("/")))[0] for _ in range(4)] == [200] * 4
            group = next(iter(gw.worker.holder.current.upstream_groups))
            now = asyncio.get_running_loop().time()  # the clock health is recorded on
            assert [t.available(now) for t in group.targets] == [False, True]
    assert a.hits == 4


async def test_no_healthy_target_is_503(tmp_path: Path) -> None:
    config = proxy_config(
        tmp_path, [f"http://127.0.0.1:{unused_port()}"], passive_health={"failures": 1}
    )
    async with in_process_gateway(config, tmp_path) as gw:
        status, _, body = await fetch(gw.url("/"))
        assert status == 502
        assert body.startswith(b"502 Bad Gateway: bad gateway: connect failed")
        status, headers, body = await fetch(gw.url("/"))
    assert (status, headers["Retry-After"]) == (503, "1")
    assert body == b"503 Service Unavailable: no healthy upstream\n"


async def test_active_health_takes_target_out_and_back(tmp_path: Path) -> None:
    async with backends("a", "b") as (a, b):
        health = {"path": "/health", "interval": 0.05, "timeout": 1}
        config = proxy_config(tmp_path, [a.url, b.url], active_health=health)
        async with in_process_gateway(config, tmp_path) as gw:
            (group,) = gw.worker.holder.current.upstream_groups
            first = group.targets[0]

            async def probed(healthy: bool) -> bool:
                return first.probe_healthy is healthy

            a.health_status = 500
            await eventually(lambda: probed(False), "a probe finds a down")
            a.hits = b.hits = 0
            for _ in range(6):
                await fetch(gw.url("/"))
            assert (a.hits, b.hits) == (0, 6)
            a.health_status = 200
            await eventually(lambda: probed(True), "a probe finds a up again")
            for _ in range(6):
                await fetch(gw.url("/"))
            assert (a.hits, b.hits) == (3, 9)


async def test_post_with_body_is_never_retried(tmp_path: Path) -> None:
    attempts = 0

    async def reset_after_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        await read_head(reader)
        await reader.readexactly(5)
        writer.transport.abort()

    async with raw_backend(reset_after_body) as bad, raw_backend(reset_after_body) as bad2:
        config = proxy_config(tmp_path, [bad, bad2])
        async with in_process_gateway(config, tmp_path) as gw:
            status, _, _ = await fetch(gw.url("/"), "POST", data=b"hello")
    assert status == 502
    assert attempts == 1


async def test_connect_timeout_is_504(tmp_path: Path) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    # neither succeeds nor is refused.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # the queue's one place
            config = proxy_config(
                tmp_path, [f"http://127.0.0.1:{port}"], timeouts={"connect": 0.2}, max_tries=1
            )
            async with in_process_gateway(config, tmp_path) as gw:
                status, _, body = await fetch(gw.url("/"))
    assert (status, body) == (504, b"504 Gateway Timeout: upstream timed out: connect timed out\n")


async def test_first_byte_timeout_is_504(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        config = proxy_config(tmp_path, [a.url], timeouts={"first_byte": 0.2}, max_tries=1)
        async with in_process_gateway(config, tmp_path) as gw:
            status, _, body = await fetch(gw.url("/slow?s=2"))
    assert status == 504
    assert body == b"504 Gateway Timeout: upstream timed out: no response head in time\n"


async def test_garbage_from_upstream_is_502(tmp_path: Path) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async with raw_backend(garbage) as bad:
        async with in_process_gateway(proxy_config(tmp_path, [bad], max_tries=1), tmp_path) as gw:
            status, _, body = await fetch(gw.url("/"))
            assert status == 502
            assert body.startswith(b"502 Bad Gateway: bad gateway: invalid response from upstream")
            assert (await fetch(gw.url("/_gateway/health")))[0] == 200


async def test_upstream_closing_mid_body_cuts_the_client(tmp_path: Path) -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-some")
        await writer.drain()
        writer.close()

    async with raw_backend(short) as bad:
        async with in_process_gateway(proxy_config(tmp_path, [bad], max_tries=1), tmp_path) as gw:
            with pytest.raises(aiohttp.ClientPayloadError):
                await fetch(gw.url("/"))


async def test_interim_1xx_response_is_skipped(tmp_path: Path) -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        await writer.drain()

    async with raw_backend(early_hints) as odd:
        async with in_process_gateway(proxy_config(tmp_path, [odd]), tmp_path) as gw:
            status, _, body = await fetch(gw.url("/"))
    assert (status, body) == (200, b"final")


async def test_strip_and_rewrite_prefix(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        config = with_routes(
            base_config(tmp_path),
            {
                "name": "s",
                "match": {"path_prefix": "/api"},
                "proxy": {"upstreams": [a.url], "strip_prefix": True},
            },
            {
                "name": "r",
                "match": {"path_prefix": "/old"},
                "proxy": {"upstreams": [a.url], "rewrite_prefix": "/new"},
            },
        )
        async with in_process_gateway(config, tmp_path) as gw:
            assert json.loads((await fetch(gw.url("/api/users?x=1")))[2])["path"] == "/users?x=1"
            assert json.loads((await fetch(gw.url("/api")))[2])["path"] == "/"
            assert json.loads((await fetch(gw.url("/old/a")))[2])["path"] == "/new/a"


async def test_large_upload_and_download_stream_in_bounded_memory(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        config = proxy_config(tmp_path, [a.url])
        config["server"]["limits"] = {"max_body_bytes": 20 * 1024 * 1024}
        async with in_process_gateway(config, tmp_path) as gw, aiohttp.ClientSession() as session:
            # Client, gateway and backend share this process: count what is held at once.
            tracemalloc.start()
            try:
                received = 0
                async with session.get(gw.url("/big?mb=10")) as resp:
                    async for chunk in resp.content.iter_any():
                        received += len(chunk)
                assert (resp.status, received) == (200, 10 * 1024 * 1024)

                async def chunks() -> Any:
                    for _ in range(160):
                        yield b"y" * 65536

                async with session.post(gw.url("/upload"), data=chunks()) as resp:
                    assert resp.status == 200
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert a.bodies[-1] == 10 * 1024 * 1024
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes: a 10 MB body was buffered"


async def test_event_stream_is_flushed_as_it_arrives(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        async with in_process_gateway(proxy_config(tmp_path, [a.url]), tmp_path) as gw:
            async with aiohttp.ClientSession() as session, session.get(gw.url("/sse")) as resp:
                # The backend sends its second event only once the first was read here: an
                # answer held back until it ends would never arrive.
                async with asyncio.timeout(5):
                    first = await resp.content.readuntil(b"\n\n")
                a.release.set()
                second = await resp.content.readuntil(b"\n\n")
    assert (first, second) == (b"data: one\n\n", b"data: two\n\n")


async def test_websocket_echo_both_ways_with_close_code(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        async with in_process_gateway(proxy_config(tmp_path, [a.url]), tmp_path) as gw:
            async with aiohttp.ClientSession() as session:
                cookie = {"Cookie": "session=abc"}
                async with session.ws_connect(gw.url("/ws"), autoping=False, headers=cookie) as ws:
                    await ws.send_str("headers")
                    assert (await ws.receive()).data == "session=abc|127.0.0.1"
                    await ws.send_str("hi")
                    assert (await ws.receive()).data == "echo:hi"
                    await ws.send_bytes(b"\x01\x02\x03")
                    assert (await ws.receive()).data == b"\x03\x02\x01"
                    await ws.ping(b"p")
                    pong = await ws.receive()
                    assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"p")
                    await ws.send_str("close")
                    closing = await ws.receive()
                    assert (closing.type, closing.data, closing.extra) == (
                        aiohttp.WSMsgType.CLOSE, 4001, "bye"
                    )  # fmt: skip
                    assert ws.close_code == 4001


async def test_smuggling_attempt_never_reaches_the_backend(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        async with in_process_gateway(proxy_config(tmp_path, [a.url]), tmp_path) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
            writer.write(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            async with asyncio.timeout(5):
                reply = await reader.read()
            writer.close()
            await writer.wait_closed()
    assert reply.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert a.hits == 0


async def test_expect_100_continue(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        async with in_process_gateway(proxy_config(tmp_path, [a.url]), tmp_path) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            async with asyncio.timeout(5):
                interim = await reader.readuntil(b"\r\n\r\n")
                assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
                writer.write(b"data")
                head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert a.bodies == [4]


async def test_client_hanging_up_is_logged_as_499(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        async with in_process_gateway(proxy_config(tmp_path, [a.url]), tmp_path) as gw:
            request = asyncio.ensure_future(fetch(gw.url("/slow?s=1")))
            await happens(a.arrived, "the request reaches the backend")
            request.cancel()

            async def logged() -> bool:
                return len(gw.access_log()) == 1

            await eventually(logged, "the abandoned request is logged")
            entries = gw.access_log()
    assert [(e["status"], e["route"], e["uri"]) for e in entries] == [(499, "app", "/slow?s=1")]


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    ids=["upstream_waiting", "upstream_answered_early"],
)
async def test_a_client_hanging_up_closes_the_upstream_connection(
    tmp_path: Path, answer: bytes
) -> None:
    """A client that hangs up mid-upload cancels the upstream request: its connection is
    closed while the gateway goes on serving, never kept for another request with half a
    body in it (an upstream that answered early leaves a connection that looks reusable)."""
    async with recording_backend(answer) as (url, upstream):
        async with in_process_gateway(proxy_config(tmp_path, [url]), tmp_path) as gw:
            _, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
            writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
            await happens(upstream.head_arrived, "the request reaches the upstream")
            writer.close()
            await writer.wait_closed()
            await happens(upstream.hung_up, "the gateway closes its upstream connection")
    (sent,) = upstream.received
    assert sent.startswith(b"POST /upload HTTP/1.1\r\n")


async def test_https_upstream_is_verified(tmp_path: Path) -> None:
    import ssl

    import trustme
    from aiohttp import web

    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ssl)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="over tls")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0, ssl_context=server_ssl)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    upstream = f"https://localhost:{port}"
    try:
        trusted = proxy_config(tmp_path, [upstream], ca_file=str(ca_file))
        async with in_process_gateway(trusted, tmp_path) as gw:
            assert (await fetch(gw.url("/")))[::2] == (200, b"over tls")
        # Default trust store: the test CA is unknown, so verification must fail.
        untrusted = proxy_config(tmp_path, [upstream], max_tries=1)
        async with in_process_gateway(untrusted, tmp_path) as gw:
            status, _, body = await fetch(gw.url("/"))
            assert status == 502
            # After it, Python's own source line ("(_ssl.c:1006)"), which varies by version.
            assert body.startswith(
                b"502 Bad Gateway: bad gateway: connect failed: [SSL: CERTIFICATE_VERIFY_FAILED]"
                b" certificate verify failed: unable to get local issuer certificate "
            )
    finally:
        await runner.cleanup()


async def test_dot_segments_cannot_slip_past_a_route(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        config = with_routes(
            base_config(tmp_path),
            {"name": "block", "match": {"path_prefix": "/admin"}, "respond": {"status": 403}},
            {"name": "app", "proxy": {"upstreams": [a.url]}},
        )
        async with in_process_gateway(config, tmp_path) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
            replies = []
            for path in ("/x/%2e%2e/admin", "/x/../admin", "/x%2F..%2Fadmin", "/./admin"):
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                replies.append(head.split(b"\r\n")[0])
            writer.close()
            await writer.wait_closed()
    assert replies == [b"HTTP/1.1 400 Bad Request"] * 4
    assert a.hits == 0


async def test_close_delimited_upstream_body_is_complete(tmp_path: Path) -> None:
    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()

    async with raw_backend(old_style) as odd:
        async with in_process_gateway(proxy_config(tmp_path, [odd]), tmp_path) as gw:
            assert (await fetch(gw.url("/")))[::2] == (200, b"all of it")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["whole", "streamed"],
)
async def test_an_answer_without_content_type_gets_none_added(
    tmp_path: Path, answer: bytes
) -> None:
    # RFC 9110 §8.3: without Content-Type the client may sniff; a proxy adding
    # application/octet-stream would forbid it.
    async def untyped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(answer)
        await writer.drain()

    async with raw_backend(untyped) as url:
        async with in_process_gateway(proxy_config(tmp_path, [url]), tmp_path) as gw:
            status, headers, body = await fetch(gw.url("/"))
    assert (status, body) == (200, b"hello")
    assert "Content-Type" not in headers


@pytest.mark.asyncio_loop  # asyncio's loop: its create_connection can be watched
async def test_a_burst_of_requests_is_not_a_burst_of_connects() -> None:
    from gateway.proxy.upstream import MAX_CONNECTING, Pool

    async with backends("a") as (a,):
        loop = asyncio.get_running_loop()
        real = loop.create_connection
        in_flight = peak = 0

        async def watched(*args: Any, **kwargs: Any) -> Any:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await real(*args, **kwargs)
            finally:
                in_flight -= 1

        loop.create_connection = watched  # type: ignore[method-assign]
        pool = Pool(a.url, limit=256, verify_tls=True)
        try:
            acquired = await asyncio.gather(*(pool.acquire(5.0) for _ in range(200)))
        finally:
            del loop.create_connection
        assert len(acquired) == 200
        assert peak == MAX_CONNECTING  # at most that many connects at once, and used fully
        for conn, _ in acquired:
            conn.close()
            pool.release(conn)
        pool.close()
