"""The accept loop: a burst of clients is taken at once, fd exhaustion pauses it."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import select
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from gateway.http.listen import PAUSE, AcceptSite

HELLO = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def _hello(request: web.BaseRequest) -> web.Response:
    return web.Response(text="hi")


def _plain_site(runner: web.BaseRunner, listening: socket.socket) -> AcceptSite:
    return AcceptSite(runner, listening, ssl_context=None, handshake_timeout=lambda: 10.0)


@asynccontextmanager
async def _site() -> AsyncIterator[tuple[web.Server, int]]:
    listening = socket.create_server(("127.0.0.1", 0), backlog=4096)
    server = web.Server(_hello)
    runner = web.ServerRunner(server)
    await runner.setup()
    try:
        await AcceptSite(
            runner, listening, ssl_context=None, handshake_timeout=lambda: 10.0
        ).start()
        yield server, listening.getsockname()[1]
    finally:
        await runner.cleanup()
        listening.close()


def _connect(port: int, count: int) -> list[socket.socket]:
    """``count`` clients whose handshakes the kernel completes (backlog) without the
    server's loop running: the burst a load test or a reconnect storm makes."""
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        clients.append(client)
    pending = list(clients)
    deadline = time.monotonic() + 5
    while pending and time.monotonic() < deadline:  # writable: the handshake is done
        _, writable, _ = select.select([], pending, [], 0.1)
        pending = [c for c in pending if c not in writable]
    assert not pending, f"{len(pending)} of {count} connections not established"
    return clients


async def test_a_burst_of_connections_is_accepted_in_a_few_loop_iterations() -> None:
    async with _site() as (server, port):
        clients = _connect(port, 300)
        try:
            # uvloop's own server accepts one connection per iteration: after ten it
            # would have ten. Ours takes the whole queue on the first.
            for _ in range(10):
                await asyncio.sleep(0)
            assert len(server.connections) == 300
            loop = asyncio.get_running_loop()
            for client in clients[:3]:  # and they are served
                await loop.sock_sendall(client, HELLO)
                assert (await loop.sock_recv(client, 4096)).startswith(b"HTTP/1.1 200 OK\r\n")
        finally:
            for client in clients:
                client.close()


async def test_out_of_descriptors_pauses_accepting_then_takes_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, "gateway.http.listen")
    async with _site() as (server, port):
        clients = _connect(port, 20)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        in_use = len(os.listdir("/proc/self/fd"))
        try:
            # Room for five more descriptors: accept() fails with EMFILE after a few, and
            # again at every retry while the limit stays.
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 5, hard))
            await asyncio.sleep(PAUSE * 3)
            assert 0 < len(server.connections) < 20
            assert "accept failed (Too many open files); retrying every 0.1s" in caplog.text
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            # One error logged for the whole episode, then the rest after the pause.
            assert caplog.text.count("accept failed") == 1
            await asyncio.sleep(PAUSE * 5)
            assert len(server.connections) == 20
        finally:
            for client in clients:
                client.close()


async def test_a_stopped_site_accepts_no_more() -> None:
    listening = socket.create_server(("127.0.0.1", 0), backlog=64)
    server = web.Server(_hello)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = _plain_site(runner, listening)
    port = listening.getsockname()[1]
    await site.start()
    await site.stop()
    assert listening.fileno() == -1  # closed, as uvloop's own server does
    clients = _connect(port, 3)
    try:
        for _ in range(10):
            await asyncio.sleep(0)
        assert server.connections == []
        refused = [client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) for client in clients]
        assert refused == [errno.ECONNREFUSED] * 3
    finally:
        for client in clients:
            client.close()
        await runner.cleanup()
        listening.close()
