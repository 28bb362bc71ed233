"""Accepting connections: the listening socket's accept loop, in the gateway's hands.

uvloop (libuv) accepts one connection per event-loop iteration. Under load an iteration
takes milliseconds, so a burst of new clients (a load test opening 1000 connections, a
reconnect storm after a deploy) waits in the kernel's accept queue for up to seconds:
measured, 2 s client timeouts at 1000 connections while every accepted request was
answered within 1 s. Here each readiness of the socket accepts everything queued (up to
``ACCEPT_BATCH``), as asyncio's own loop does, and hands each socket to the loop as an
accepted connection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger("gateway.http.listen")

ACCEPT_BATCH = 512  # connections taken per readiness of the listening socket
ACCEPT_ALL = 1 << 16  # at stop: the whole queue (the kernel caps it at somaxconn)
# Out of descriptors or kernel memory: accepting again at once would spin.
_PAUSE_ON = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
PAUSE = 0.1  # seconds before accepting again after one of those


class AcceptSite(web.BaseSite):
    """An aiohttp site on an already bound and listening socket (like ``SockSite``)
    whose accept loop is ours."""

    __slots__ = (
        "_accepting", "_handshake_timeout", "_handshakes", "_name", "_sock", "_starved",
    )  # fmt: skip

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: Callable[[], float],
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._sock = sock
        # Read per connection (a reload applies to new ones). Like Go's net/http, the
        # TLS handshake counts against the time a client has for its first request head:
        # uvloop's default of 60 s would let a silent client hold a handshake that long.
        self._handshake_timeout = handshake_timeout
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        self._name = f"{'https' if ssl_context else 'http'}://{host}:{port}"
        self._accepting = False
        self._starved = False  # out of descriptors since the last accept: logged once
        self._handshakes: set[asyncio.Task[object]] = set()

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        self._sock.setblocking(False)
        self._resume()

    async def stop(self) -> None:
        # Connections the kernel completed are taken before the socket closes: closing
        # resets them, and their requests may already be sent (issue 27, D8). They are
        # then served as the drain serves the others, with Connection: close.
        self._pause()
        if self._sock.fileno() != -1:
            self._accept(ACCEPT_ALL)
        self._sock.close()
        connecting = list(self._handshakes)
        if self._ssl_context is not None:
            # A client still in its TLS handshake has sent no request yet: not kept
            # waiting for (a silent one would hold the drain for read_header).
            for task in connecting:
                task.cancel()
        await asyncio.gather(*connecting, return_exceptions=True)
        if connecting:
            await asyncio.sleep(0)  # one poll: what the plain connections sent is read
        await super().stop()

    def _resume(self) -> None:
        if not self._accepting and self._sock.fileno() != -1:  # not once stopped
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._accept)
            self._accepting = True

    def _pause(self) -> None:
        if self._accepting:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._accepting = False

    def _accept(self, batch: int = ACCEPT_BATCH) -> None:
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        for _ in range(batch):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _PAUSE_ON:
                    if not self._starved:
                        log.error("accept failed (%s); retrying every %.1fs", exc.strerror, PAUSE)
                        self._starved = True
                    self._pause()
                    loop.call_later(PAUSE, self._resume)
                    return
                continue  # that client is gone (ECONNABORTED and the like)
            self._starved = False
            # A task per connection: short for plain TCP (the transport's start), the
            # handshake for TLS. Kept so that stop() can cancel handshakes in progress.
            if self._ssl_context is None:
                connecting = loop.connect_accepted_socket(server, conn)
            else:
                connecting = loop.connect_accepted_socket(
                    server,
                    conn,
                    ssl=self._ssl_context,
                    ssl_handshake_timeout=self._handshake_timeout(),
                )
            task = loop.create_task(connecting)
            self._handshakes.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._handshakes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A failed TLS handshake or a client that hung up at once: theirs, not ours.
            log.debug("connection not established: %r", task.exception())
