"""The HTTP/2 shell with clients nobody here wrote (curl, nghttp, httpx): ALPN and h2c,
the same answers as HTTP/1.1, multiplexing, flow control, drain."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path
from typing import Any

import h2.events
import httpx

from tests.backends import backends
from tests.events.test_snowplow import PAYLOAD
from tests.http.h2_support import RawH2, h2_config, raw_h2
from tests.support import HELLO, in_process_gateway, with_routes


async def run(*command: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_curl_negotiates_h2_over_tls_and_speaks_h2c_with_prior_knowledge(
    tmp_path: Path,
) -> None:
    async with in_process_gateway(h2_config(tmp_path, tls=True), tmp_path) as gw:
        secure = f"https://localhost:{gw.ports['secure']}/"
        tls = await run("curl", "-s", "--http2", "--cacert", str(tmp_path / "ca.pem"),
                        "-D", "-", "--resolve", f"localhost:{gw.ports['secure']}:127.0.0.1",
                        secure)  # fmt: skip
        h2c = await run("curl", "-s", "--http2-prior-knowledge", "-w", "%{http_version}",
                        gw.url("/"))  # fmt: skip
        h1 = await run("curl", "-s", "-w", "%{http_version}", gw.url("/"))
        records = gw.access_log()
    code, head, _ = tls
    assert code == 0 and head.startswith("HTTP/2 200 \r\n")
    lines = head.split("\r\n\r\n", 1)[0].lower().splitlines()
    assert "content-length: 23" in lines and "server: edge-gateway" in lines
    assert not any(line.startswith(("connection:", "transfer-encoding:")) for line in lines)
    assert head.split("\r\n\r\n", 1)[1] == HELLO
    assert h2c[1] == HELLO + "2" and h1[1] == HELLO + "1.1"  # the same listener, both
    assert [r["proto"] for r in records] == ["HTTP/2.0", "HTTP/2.0", "HTTP/1.1"]


async def test_nghttp_multiplexes_many_streams_on_one_connection(tmp_path: Path) -> None:
    async with in_process_gateway(h2_config(tmp_path), tmp_path) as gw:
        urls = [gw.url(f"/n{i}") for i in range(20)]
        code, _, err = await run("nghttp", "-n", "-s", *urls)
        records = gw.access_log()
    assert code == 0, err
    assert len(records) == 20 and {r["status"] for r in records} == {200}
    assert {r["proto"] for r in records} == {"HTTP/2.0"}


def every_handler_config(tmp_path: Path, backend: str) -> dict[str, Any]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.txt").write_bytes(b"0123456789" * 2)
    (root / "big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB: not cached
    config = h2_config(tmp_path)
    config["tracking"] = {"node": "n", "write_keys": ["wk"]}
    config["redirects"] = {"links": [{"slug": "go", "target": "https://shop.example/sale"}]}
    config["server"]["limits"] = {"max_body_bytes": 20 << 20}
    user = {"username": "rill", "password": "intake-secret"}
    return with_routes(
        config,
        {"name": "segment", "match": {"path_prefix": "/v1"}, "segment": {}},
        {"name": "links", "match": {"path_prefix": "/l"}, "redirect": {}},
        {"name": "snowplow", "match": {"path_prefix": "/sp"}, "snowplow": {}},
        {"name": "intake", "match": {"path_prefix": "/intake"}, "intake": {"users": [user]}},
        {"name": "static", "match": {"path_prefix": "/files"}, "static": {"root": str(root)}},
        {
            "name": "app",
            "match": {"path_prefix": "/app"},
            "proxy": {"upstreams": [backend], "strip_prefix": True},
        },
        {"name": "collect", "match": {"path_prefix": "/t"}, "collect": {}},
        {"name": "hello", "respond": {"body": HELLO, "headers": {"X-Served": "yes"}}},
    )


async def test_every_handler_answers_over_h2_as_over_http1(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        config = every_handler_config(tmp_path, a.url)
        async with (
            in_process_gateway(config, tmp_path) as gw,
            httpx.AsyncClient(http1=False, http2=True, base_url=gw.url("")) as h2,
            httpx.AsyncClient(base_url=gw.url("")) as h1,
        ):
            for method, path, kwargs in [
                ("GET", "/", {}),
                ("GET", "/files/a.txt", {"headers": {"Range": "bytes=2-5"}}),
                ("GET", "/files/big.bin", {"headers": {"Range": "bytes=1000-1999"}}),
                ("GET", "/files/big.bin", {}),
                ("GET", "/t/img/v1/c/1", {}),
                ("POST", "/t/tr/v1/k/v", {"json": {"ename": "x"}}),
                ("POST", "/app/upload", {"content": b"z" * 300_000}),
                ("GET", "/_gateway/health", {}),
                ("POST", "/v1/track", {"auth": ("wk", ""), "json": {"userId": "u", "event": "E"}}),
                ("GET", "/l/go", {}),
                ("GET", "/sp/i?e=pv&url=https%3A%2F%2Fshop.example%2F", {}),
                (
                    "POST",
                    "/sp/com.snowplowanalytics.snowplow/tp2",
                    {
                        "json": {
                            "schema": PAYLOAD,
                            "data": [{"e": "pv", "p": "web", "tv": "t"}],
                        }
                    },
                ),
                (
                    "POST",
                    "/intake",
                    {
                        "auth": ("rill", "intake-secret"),
                        "content": (
                            b'{"event_id":"e1","event_time":"2026-12-02T06:00:00Z",'
                            b'"event_type":"log","event_name":"n"}\n'
                        ),
                    },
                ),
                ("GET", "/missing-dir/../x", {}),
            ]:
                one = await h1.request(method, path, **kwargs)
                two = await h2.request(method, path, **kwargs)
                assert two.http_version == "HTTP/2", path
                assert (two.status_code, two.content) == (one.status_code, one.content), path
                names = ("content-type", "content-range", "cache-control", "x-served", "location")
                for name in names:
                    assert two.headers.get(name) == one.headers.get(name), (path, name)
                assert "connection" not in two.headers and "transfer-encoding" not in two.headers
            # The echo holds the headers the upstream got, which differ by protocol.
            one, two = await h1.get("/app/echo?q=1"), await h2.get("/app/echo?q=1")
    assert (one.status_code, two.status_code) == (200, 200)
    assert two.headers["content-type"] == one.headers["content-type"]
    echoed = json.loads(two.content)
    same = {"backend": "a", "method": "GET", "path": "/echo?q=1", "body_length": 0}
    assert {k: v for k, v in echoed.items() if k != "headers"} == same
    assert {k: v for k, v in json.loads(one.content).items() if k != "headers"} == same
    sent = {k.lower(): v for k, v in echoed["headers"]}
    # The upstream gets HTTP/1.1 with a Host from :authority and the usual forwarding.
    assert sent["host"] == f"127.0.0.1:{gw.ports['public']}"
    assert sent["x-forwarded-for"] == "127.0.0.1" and sent["x-forwarded-proto"] == "http"
    assert a.bodies.count(300_000) == 2  # the upload, over each protocol


async def test_concurrent_streams_on_one_connection_and_sse_flushed(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        config = every_handler_config(tmp_path, a.url)
        async with (
            in_process_gateway(config, tmp_path) as gw,
            httpx.AsyncClient(http1=False, http2=True, base_url=gw.url("")) as client,
        ):
            # Each answers only once all 30 are in: streams served one at a time never would.
            answers = await asyncio.gather(
                *(client.get(f"/app/together?n=30&i={i}") for i in range(30))
            )
            async with client.stream("GET", "/app/sse") as resp:
                # The backend sends its second event only once the first was read here.
                chunks = resp.aiter_raw()
                async with asyncio.timeout(5):
                    first = await anext(chunks)
                a.release.set()
                second = await anext(chunks)
        records = gw.access_log()
    assert [(r.status_code, r.content) for r in answers] == [(200, b"together")] * 30
    assert (first, second) == (b"data: one\n\n", b"data: two\n\n")
    assert len({r["request_id"] for r in records}) == len(records)


async def download(client: RawH2, path: str) -> tuple[int, int]:
    """Status and body length of one GET, each DATA frame counted, acknowledged and dropped
    (the window the client grants is the default 64 KiB: the gateway must wait for it)."""
    stream_id, status, received = client.request(path), 0, 0
    while True:
        events, client.events = client.events, []
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[":status"])
            elif isinstance(event, h2.events.DataReceived):
                received += len(event.data)
                client.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                return status, received
        client.flush()
        assert await client.read(limit=10), "closed before the download ended"
        client.raw.clear()  # kept for frame-level tests, not needed here


async def test_large_upload_and_download_flow_in_bounded_memory(tmp_path: Path) -> None:
    """Flow control both ways: a 10 MB download goes out as the client's window allows,
    a 10 MB upload is taken as fast as the upstream reads it; neither is buffered.
    (httpx grants a 16 MB window and buffers what arrives: not the download's client.)"""
    async with backends("a") as (a,):
        config = with_routes(
            h2_config(tmp_path, limits={"max_body_bytes": 20 << 20}),
            {"name": "app", "proxy": {"upstreams": [a.url]}},
        )
        async with (
            in_process_gateway(config, tmp_path) as gw,
            raw_h2(gw.ports["public"]) as raw,
            httpx.AsyncClient(http1=False, http2=True, base_url=gw.url(""), timeout=30) as client,
        ):
            tracemalloc.start()  # client, gateway and backend share this process
            try:
                got = await download(raw, "/big?mb=10")

                async def chunks() -> Any:
                    for _ in range(160):
                        yield b"y" * 65536

                upload = await client.post("/upload", content=chunks())
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert got == (200, 10 << 20)
    assert (upload.status_code, a.bodies[-1]) == (200, 10 << 20)
    assert peak < 3 << 20, f"peak {peak} bytes: a 10 MB body was buffered"
