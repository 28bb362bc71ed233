"""A proxied WebSocket's two directions, message for message: text, binary, ping and
pong forwarded as they come (neither side's pings are answered here), and the close
code of whichever side ends it passed on to the other."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web

WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def bridge(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, idle: float
) -> None:
    """Until either side closes or stays silent for ``idle`` seconds."""

    async def pump(source: WebSocket, sink: WebSocket) -> None:
        while True:
            msg = await source.receive(timeout=idle)
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                await sink.ping(msg.data)
            elif msg.type == aiohttp.WSMsgType.PONG:
                await sink.pong(msg.data)
            else:  # CLOSE, CLOSING, CLOSED, ERROR: pass the close code on and stop
                reason = msg.extra.encode() if isinstance(msg.extra, str) else b""
                await sink.close(code=source.close_code or 1000, message=reason)
                return

    tasks = [
        asyncio.ensure_future(pump(client, upstream)),
        asyncio.ensure_future(pump(upstream, client)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, ConnectionError):
                task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        await upstream.close()
