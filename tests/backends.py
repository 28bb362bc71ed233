"""Real backend servers on ephemeral ports for proxy tests: a well-behaved aiohttp app
and a raw-socket server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import WSMsgType, web


@dataclass
class Backend:
    name: str
    url: str
    hits: int = 0
    bodies: list[int] = field(default_factory=list)
    health_status: int = 200


def _app(backend: Backend) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        backend.hits += 1
        body = await request.read()
        backend.bodies.append(len(body))
        return web.json_response(
            {
                "backend": backend.name,
                "method": request.method,
                "path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_length": len(body),
            }
        )

    async def cookies(request: web.Request) -> web.Response:
        response = web.Response(text="cookies")
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/")
        response.headers["Connection"] = "X-Secret"
        response.headers["X-Secret"] = "hop"
        return response

    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("mb", "10")) * 1024 * 1024
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            await response.write(chunk)
        return response

    async def upload(request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        backend.bodies.append(total)
        return web.json_response({"received": total})

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        await asyncio.sleep(0.6)
        await response.write(b"data: two\n\n")
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "2")))
        return web.Response(text="late")

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=backend.health_status, text="health")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(autoping=False)
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                if msg.data == "close":
                    await sock.close(code=4001, message=b"bye")
                    break
                if msg.data == "headers":
                    await sock.send_str(
                        f"{request.headers.get('Cookie')}|{request.headers.get('X-Forwarded-For')}"
                    )
                    continue
                await sock.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
            elif msg.type == WSMsgType.PING:
                await sock.pong(msg.data)
        return sock

    app = web.Application()
    app.router.add_route("*", "/cookies", cookies)
    app.router.add_get("/big", big)
    app.router.add_post("/upload", upload)
    app.router.add_get("/sse", sse)
    app.router.add_get("/slow", slow)
    app.router.add_get("/health", health)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` on an ephemeral loopback port, as ``http://127.0.0.1:PORT``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def backends(*names: str) -> AsyncIterator[list[Backend]]:
    runners: list[web.AppRunner] = []
    started: list[Backend] = []
    try:
        for name in names:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            backend = Backend(name, f"http://127.0.0.1:{sock.getsockname()[1]}")
            runner = web.AppRunner(_app(backend), access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            runners.append(runner)
            started.append(backend)
        yield started
    finally:
        for runner in runners:
            await runner.cleanup()


RawBehaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_backend(behaviour: RawBehaviour) -> AsyncIterator[str]:
    """A socket server that answers with ``behaviour``: for responses no real server sends."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await behaviour(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def json_body(data: bytes) -> dict[str, object]:
    result: dict[str, object] = orjson.loads(data)
    return result


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
