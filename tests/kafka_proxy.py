"""A TCP relay in front of a Kafka listener that can lose a produce request's answer: it
passes the request to the broker, then drops the client's connection before the answer
comes back, as a network cut would. The broker advertises the relay's port, so every
connection of a client goes through it."""

from __future__ import annotations

import asyncio
import contextlib
import struct

PRODUCE = 0  # the Produce API's key, the int16 after a request's int32 length


class CuttingProxy:
    """Relays ``127.0.0.1:port`` to ``target``; ``cut(n)`` loses the answers to the next
    ``n`` produce requests; ``cuts`` counts the connections cut, ``produced`` the produce
    requests relayed (a retry is one more)."""

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self.target = target
        self.cuts = 0
        self.produced = 0
        self._to_cut = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        return self

    def cut(self, requests: int = 1) -> None:
        self._to_cut += requests

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        answers = asyncio.ensure_future(self._pipe(upstream_reader, writer))
        try:
            while True:
                head = await reader.readexactly(6)  # length, then the API key
                length, api_key = struct.unpack(">ih", head)
                body = await reader.readexactly(length - 2)
                upstream.write(head + body)
                await upstream.drain()
                self.produced += api_key == PRODUCE
                if api_key == PRODUCE and self._to_cut:
                    self._to_cut -= 1
                    self.cuts += 1
                    answers.cancel()  # the broker's answer is never relayed
                    writer.transport.abort()
                    # Held until the broker has answered: the records are written.
                    (size,) = struct.unpack(">i", await upstream_reader.readexactly(4))
                    await upstream_reader.readexactly(size)
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            answers.cancel()
            upstream.close()
            writer.close()
            with contextlib.suppress(Exception):
                await answers
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
