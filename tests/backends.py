"""Real backend servers on ephemeral ports for proxy tests: a well-behaved aiohttp app,
a raw-socket server that misbehaves on purpose, and one that records what the gateway
sent it and when the gateway hung up."""

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
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # /slow or /upload began
    release: asyncio.Event = field(default_factory=asyncio.Event)  # /sse's second event
    together: int = 0  # /together requests received
    all_in: asyncio.Event = field(default_factory=asyncio.Event)


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
        backend.arrived.set()
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        backend.bodies.append(total)
        return web.json_response({"received": total})

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        await backend.release.wait()  # the test read the first event: it was not held back
        await response.write(b"data: two\n\n")
        return response

    async def slow(request: web.Request) -> web.Response:
        backend.arrived.set()
        await asyncio.sleep(float(request.query.get("s", "2")))
        return web.Response(text="late")

    async def together(request: web.Request) -> web.Response:
        """Answers once ``n`` of these are in progress at once: requests the gateway
        served one after the other would wait for ever."""
        backend.together += 1
        if backend.together >= int(request.query["n"]):
            backend.all_in.set()
        await backend.all_in.wait()
        return web.Response(text="together")

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
    app.router.add_get("/together", together)
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
            # Handlers still running at the end (a /slow the test gave up on) are
            # cancelled after a second rather than waited for.
            runner = web.AppRunner(_app(backend), access_log=None, shutdown_timeout=1.0)
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


@dataclass
class Recorder:
    """What a recording backend saw: the bytes of each connection, and events for a
    request head arriving and for the gateway closing a connection."""

    received: list[bytes] = field(default_factory=list)
    head_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def recording_backend(answer: bytes = b"") -> AsyncIterator[tuple[str, Recorder]]:
    """A backend that reads a request head, sends ``answer`` at once (by default
    nothing: it never answers), then reads whatever comes until the gateway closes the
    connection. Yields its URL and what it saw."""
    recorder = Recorder()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(recorder.received)
        recorder.received.append(await read_head(reader))
        recorder.head_arrived.set()
        if answer:
            writer.write(answer)
            await writer.drain()
        try:
            while chunk := await reader.read(65536):
                recorder.received[index] += chunk
        except ConnectionError:
            pass  # reset rather than closed: hung up all the same
        recorder.hung_up.set()

    async with raw_backend(record) as url:
        yield url, recorder


def json_body(data: bytes) -> dict[str, object]:
    result: dict[str, object] = orjson.loads(data)
    return result


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
