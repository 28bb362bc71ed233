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
import h2.exceptions
import h2.settings
import hpack
import trustme
from hyperframe.frame import Frame, HeadersFrame

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

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, strict: bool = True
    ) -> None:
        self.reader, self.writer = reader, writer
        # Not strict: h2 sends whatever header block the test writes (attacks).
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=strict,
            normalize_outbound_headers=strict,
            split_outbound_cookies=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.events: list[Any] = []
        self.raw = bytearray()  # every byte the server sent
        self._broken = False  # h2's client state machine refused what came: raw only

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
        self.raw += data
        if self._broken:
            return [None]
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # Frames a strict client would refuse, such as answers after a graceful
            # GOAWAY (RFC 9113 §6.8 allows them): the test reads them from ``raw``.
            self._broken = True
            return [None]
        self.flush()
        self.events.extend(events)
        return events or [None]

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
                while data := await self.reader.read(65536):
                    self.raw += data
        except ConnectionResetError:
            return True  # closed with our frames unread: the kernel resets
        except TimeoutError:
            return False
        return True

    def frames(self) -> list[Any]:
        """Every frame the server sent, parsed from the raw bytes (header blocks decoded
        into ``frame.headers``)."""
        frames, view, decoder = [], memoryview(bytes(self.raw)), hpack.Decoder()
        decoder.max_header_list_size = 1 << 20
        offset = 0
        while len(view) - offset >= 9:
            frame, length = Frame.parse_frame_header(view[offset : offset + 9])
            if len(view) - offset - 9 < length:
                break
            frame.parse_body(view[offset + 9 : offset + 9 + length])
            if isinstance(frame, HeadersFrame):
                frame.headers = dict(decoder.decode(bytes(frame.data)))  # type: ignore[attr-defined]
            frames.append(frame)
            offset += 9 + length
        return frames

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
async def raw_h2(
    port: int,
    *,
    settings: dict[int, int] | None = None,
    tls: ssl.SSLContext | None = None,
    strict: bool = True,
) -> AsyncIterator[RawH2]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
    )
    client = RawH2(reader, writer, strict=strict)
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
