"""Helpers for the HTTP/2 shell's tests: gateways with an h2c and a TLS listener, and a
raw HTTP/2 client on the ``h2`` library (client mode) that crafts frames attacks send."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import trustme

from tests.support import base_config

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_config(tmp_path: Path, *, tls: bool = False, **server: Any) -> dict[str, Any]:
    """``public`` speaks h2c with prior knowledge (and HTTP/1.1); with ``tls``, a ``secure``
    listener offers h2 in ALPN with a certificate for localhost (CA in tmp_path/ca.pem)."""
    config = base_config(tmp_path, **server)
    config["server"]["listeners"][0]["h2c"] = True
    if tls:
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        config["server"]["listeners"].append(
            {"name": "secure", "host": "127.0.0.1", "port": 0, "tls": True}
        )
        config["tls"] = {
            "certificates": [{"cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")}]
        }
    return config


def client_context(tmp_path: Path, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    context.set_alpn_protocols(alpn)
    return context


class RawH2:
    """One HTTP/2 client connection whose frames the test writes itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.events: list[Any] = []

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def read(self, limit: float = 5.0) -> list[Any]:
        """Events from what arrives next (empty once the server has closed)."""
        async with asyncio.timeout(limit):
            data = await self.reader.read(65536)
        if not data:
            return []
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            events = []
        self.flush()
        self.events.extend(events)
        return events

    async def until(self, kind: type, limit: float = 5.0) -> Any:
        """The first event of ``kind`` (read until it comes); AssertionError if closed first."""
        async with asyncio.timeout(limit):
            while True:
                for event in self.events:
                    if isinstance(event, kind):
                        self.events.remove(event)
                        return event
                if not await self.read(limit):
                    raise AssertionError(f"closed before {kind.__name__}; got {self.events}")

    async def closed(self, limit: float = 5.0) -> bool:
        """Whether the server closes the connection within ``limit`` seconds."""
        try:
            async with asyncio.timeout(limit):
                while await self.reader.read(65536):
                    pass
        except (TimeoutError, ConnectionResetError):
            return False
        return True

    def request(self, path: str = "/", *, end: bool = True, **extra: str) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http"),
                   (":authority", "localhost"), *extra.items()]  # fmt: skip
        self.conn.send_headers(stream_id, headers, end_stream=end)
        self.flush()
        return stream_id

    async def response(self, stream_id: int, limit: float = 5.0) -> tuple[dict[str, str], bytes]:
        headers: dict[str, str] = {}
        body = b""
        async with asyncio.timeout(limit):
            while True:
                for event in list(self.events):
                    if getattr(event, "stream_id", None) != stream_id:
                        continue
                    self.events.remove(event)
                    if isinstance(event, h2.events.ResponseReceived):
                        headers = dict(event.headers)
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        return headers, body
                    elif isinstance(event, h2.events.StreamReset):
                        raise AssertionError(f"stream {stream_id} reset: {event.error_code!r}")
                if not await self.read(limit):
                    raise AssertionError("connection closed before the response ended")

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def raw_h2(port: int, *, settings: dict[int, int] | None = None) -> AsyncIterator[RawH2]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = RawH2(reader, writer)
    if settings:
        client.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
    client.conn.initiate_connection()
    client.flush()
    try:
        yield client
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
