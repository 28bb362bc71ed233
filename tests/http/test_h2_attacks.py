"""The 2023-24 HTTP/2 attacks and protocol abuse, each driven by a raw client (the h2
library in client mode, frames crafted with hyperframe): every one ends in a bounded
refusal, and the gateway keeps serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import socket
import tracemalloc
from pathlib import Path

import aiohttp
import h2.events
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from gateway.process.run import GC_THRESHOLDS
from tests.backends import backends, raw_backend, read_head
from tests.client import eventually, happens
from tests.clock import jump_clock
from tests.http.h2_support import PREFACE, RawH2, h2_config, raw_h2
from tests.support import HELLO, InProcessGateway, in_process_gateway, with_routes

ENDS = ["END_HEADERS", "END_STREAM"]
NOT_READING = 'gateway_http2_goaways_sent_total{reason="not_reading"}'


async def still_serving(gw: InProcessGateway) -> None:
    async with aiohttp.ClientSession() as session, session.get(gw.url("/")) as resp:
        assert (resp.status, await resp.text()) == (200, HELLO)
    async with raw_h2(gw.ports["public"]) as other:
        assert (await other.response(other.request("/")))[1] == HELLO.encode()


async def refused_with(client: RawH2, code: ErrorCodes) -> None:
    """The server said GOAWAY with ``code`` and closed the connection."""
    assert await client.closed()
    goaways = [f for f in client.frames() if isinstance(f, GoAwayFrame)]
    assert [f.error_code for f in goaways] == [code], goaways


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))  # fmt: skip


async def metrics(gw: InProcessGateway) -> str:
    gw.worker.metrics.flush()
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url("/_gateway/metrics", listener="admin")) as resp:
            return await resp.text()


@pytest.mark.asyncio_loop  # its clock is set to the start of a second, below
async def test_rapid_reset_is_cut_with_enhance_your_calm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CVE-2023-44487: streams opened and cancelled in a loop never reach the limit of
    concurrent streams, so without a cap on resets they cost work without end. The
    101st reset in a second ends the connection: the other 899 are never looked at."""
    async with in_process_gateway(h2_config(tmp_path), tmp_path) as gw:
        clock = jump_clock(monkeypatch)
        # Resets are counted per second of the loop's clock: the attack, a few
        # milliseconds, starts a second so that all of it lands in that one.
        clock.advance(math.ceil(clock()) - clock())
        async with raw_h2(gw.ports["public"]) as attacker:
            for _ in range(1000):
                stream_id = attacker.request("/")
                attacker.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
            attacker.flush()
            await refused_with(attacker, ErrorCodes.ENHANCE_YOUR_CALM)
        await still_serving(gw)
        text = await metrics(gw)
    assert metric(text, 'gateway_http2_goaways_sent_total{reason="rapid_reset"}') == 1
    assert metric(text, "gateway_http2_resets_received_total") == 101  # max_resets_per_second + 1


async def test_continuation_flood_is_refused_before_the_block_grows(tmp_path: Path) -> None:
    """2024: HEADERS without END_HEADERS, then CONTINUATION frames without end."""
    async with in_process_gateway(h2_config(tmp_path), tmp_path) as gw:
        async with raw_h2(gw.ports["public"]) as attacker:
            attacker.send_raw(HeadersFrame(1, data=b"\x82", flags=["END_STREAM"]).serialize())
            for _ in range(10_000):
                attacker.send_raw(ContinuationFrame(1, data=b"\x40\x01a\x01b").serialize())
            await refused_with(attacker, ErrorCodes.PROTOCOL_ERROR)
        await still_serving(gw)


async def test_reconnecting_continuation_floods_leave_no_memory_behind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 27, D7: one client reconnecting with CONTINUATION floods, under the worker's
    own collector thresholds. h2's connection is a reference cycle: each refused one kept
    its header block (up to 1 MiB) until a full collection; 150 MB after a flood. Now
    what the flood allocated is let go of as each connection ends, and the refusals are
    logged once with a count, not once each."""
    flood = (
        PREFACE
        + SettingsFrame(0).serialize()
        + HeadersFrame(1, data=b"\x82").serialize()
        + ContinuationFrame(1, data=b"\x40\x01a" + b"\x7f" * 16000).serialize() * 80
    )
    frozen = gc.get_threshold()
    caplog.set_level(logging.INFO, logger="gateway.http.h2")
    async with in_process_gateway(h2_config(tmp_path), tmp_path) as gw:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(60):
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
                writer.write(flood)
                with contextlib.suppress(ConnectionError):
                    await reader.read()
                writer.close()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            gc.set_threshold(*frozen)
            gc.unfreeze()
        await still_serving(gw)
    assert held < 8 << 20, f"{held / 2**20:.1f} MiB held after 60 floods"
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("HTTP/2 connection from ")


async def test_hpack_bomb_is_refused_as_it_decodes(tmp_path: Path) -> None:
    """A 4 KB header put in the dynamic table once, then referenced by one byte each
    time: a few KB on the wire, megabytes decoded."""
    async with in_process_gateway(h2_config(tmp_path), tmp_path) as gw:
        async with raw_h2(gw.ports["public"]) as attacker:
            bomb = [("x-bomb", "a" * 4000)] * 1000
            attacker.request("/", **{})  # a sane request first: the table is per connection
            attacker.conn.send_headers(3, [(":method", "GET"), (":path", "/"),
                                           (":scheme", "http"), (":authority", "x"), *bomb],
                                       end_stream=True)  # fmt: skip
            wire = attacker.conn.data_to_send()
            assert len(wire) < 20_000  # what it costs the attacker
            attacker.send_raw(wire)
            await refused_with(attacker, ErrorCodes.ENHANCE_YOUR_CALM)
        await still_serving(gw)
        text = await metrics(gw)
    assert metric(text, 'gateway_http2_goaways_sent_total{reason="enhance_your_calm"}') == 1


async def test_settings_and_ping_floods_are_cut(tmp_path: Path) -> None:
    async with in_process_gateway(h2_config(tmp_path), tmp_path) as gw:
        for frame in (SettingsFrame(0, settings={SettingCodes.ENABLE_PUSH: 0}),
                      PingFrame(0, opaque_data=b"12345678")):  # fmt: skip
            async with raw_h2(gw.ports["public"]) as attacker:
                attacker.send_raw(frame.serialize() * 1000)
                await refused_with(attacker, ErrorCodes.ENHANCE_YOUR_CALM)
        await still_serving(gw)
        text = await metrics(gw)
    assert metric(text, 'gateway_http2_goaways_sent_total{reason="control_flood"}') == 2


async def ping_round_trips(client: RawH2) -> list[object]:
    """Two PINGs, each after the other's ACK: the events of every frame the server sent
    before the second ACK. The server's loop handles a PING before the timers due in the
    same turn, and what a timer wakes runs a turn later: after two round trips, whatever
    a timer due now does has been sent."""
    for _ in range(2):
        client.conn.ping(b"roundtrp")
        client.flush()
        await client.until(h2.events.PingAckReceived)
    return list(client.events)


@pytest.mark.asyncio_loop  # the idle timeout passes on a clock moved by hand
async def test_a_client_that_never_opens_its_window_is_cut_at_the_idle_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = h2_config(tmp_path, timeouts={"keepalive": 20})  # apart from read_header's 10
    async with in_process_gateway(config, tmp_path) as gw:
        clock = jump_clock(monkeypatch)
        async with raw_h2(
            gw.ports["public"], settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}
        ) as stalled:
            stream_id = stalled.request("/")
            await stalled.until(h2.events.ResponseReceived)  # the body waits for a window
            await ping_round_trips(stalled)  # and its wait for the window has begun
            clock.advance(19)
            before = await ping_round_trips(stalled)
            clock.advance(1.5)
            reset = await stalled.until(h2.events.StreamReset)
        await still_serving(gw)
    assert not [e for e in before if isinstance(e, h2.events.StreamReset)]
    assert (reset.stream_id, reset.error_code) == (stream_id, ErrorCodes.FLOW_CONTROL_ERROR)


async def test_a_client_that_never_reads_is_cut_at_the_write_buffer_limit(
    tmp_path: Path,
) -> None:
    """Writing waits while the transport is over its high-water mark, but each stream
    may add a frame before it waits: 100 streams of 1 MB would queue about 1.6 MB for a
    client that opened every window and reads nothing. Past max_write_buffer_bytes the
    connection is cut."""
    config = h2_config(tmp_path, http2={"max_write_buffer_bytes": 1 << 20})
    config["routes"].insert(0, {"name": "big", "match": {"path_prefix": "/big"},
                                "respond": {"body": "b" * (1 << 20)}})  # fmt: skip
    async with in_process_gateway(config, tmp_path) as gw:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little
        sock.connect(("127.0.0.1", gw.ports["public"]))
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            client = RawH2(reader, writer)
            window = {SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1}
            client.conn.local_settings = Settings(client=True, initial_values=window)
            client.conn.initiate_connection()
            client.conn.increment_flow_control_window((1 << 31) - 1 - 65535)
            for _ in range(100):
                client.request("/big")

            async def cut() -> bool:
                return metric(await metrics(gw), NOT_READING) >= 1

            await eventually(cut, "the gateway cuts the connection that reads nothing")
            assert await client.closed()  # what the kernel held, then the end
            # Counted once: flushes between the cut and the close do not count it again.
            assert metric(await metrics(gw), NOT_READING) == 1
        finally:
            writer.close()
        await still_serving(gw)


async def test_stream_id_abuse_and_data_after_end_stream_are_protocol_errors(
    tmp_path: Path,
) -> None:
    async with in_process_gateway(h2_config(tmp_path), tmp_path) as gw:
        async with raw_h2(gw.ports["public"]) as even:  # client streams are odd (§5.1.1)
            block = even.conn.encoder.encode(
                [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
            )
            even.send_raw(HeadersFrame(2, data=block, flags=ENDS).serialize())
            await refused_with(even, ErrorCodes.PROTOCOL_ERROR)
        async with raw_h2(gw.ports["public"]) as backwards:
            assert (await backwards.response(backwards.request("/")))[0][":status"] == "200"
            backwards.request("/")  # stream 3
            backwards.send_raw(HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize())
            # Stream 1 is over: a frame on it is STREAM_CLOSED (RFC 9113 §5.1, "closed").
            await refused_with(backwards, ErrorCodes.STREAM_CLOSED)
        async with raw_h2(gw.ports["public"]) as late:
            stream_id = late.request("/", end=True)
            await late.response(stream_id)
            late.send_raw(DataFrame(stream_id, data=b"more", flags=["END_STREAM"]).serialize())
            # A stream error (RFC 9113 §5.1, "closed"): that stream is reset, the
            # connection goes on.
            assert not await late.closed(limit=0.5)
            (reset,) = [f for f in late.frames() if isinstance(f, RstStreamFrame)]
            assert (reset.stream_id, reset.error_code) == (stream_id, ErrorCodes.STREAM_CLOSED)
            assert (await late.response(late.request("/")))[1] == HELLO.encode()
        await still_serving(gw)


async def test_connection_specific_headers_and_disagreeing_host_are_refused(
    tmp_path: Path,
) -> None:
    async with in_process_gateway(h2_config(tmp_path), tmp_path) as gw:
        pseudo = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
        async with raw_h2(gw.ports["public"]) as client:
            # Crafted: h2's own client refuses to send either of these.
            block = client.conn.encoder.encode([*pseudo, ("host", "evil.example")])
            client.send_raw(HeadersFrame(1, data=block, flags=ENDS).serialize())
            await refused_with(client, ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 §8.3.1
        async with raw_h2(gw.ports["public"]) as client:
            block = client.conn.encoder.encode([*pseudo, ("connection", "keep-alive")])
            client.send_raw(HeadersFrame(1, data=block, flags=ENDS).serialize())
            await refused_with(client, ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 §8.2.2
        await still_serving(gw)


async def test_a_silent_connection_is_closed_at_the_head_deadline(tmp_path: Path) -> None:
    config = h2_config(tmp_path, timeouts={"read_header": 0.5})
    async with in_process_gateway(config, tmp_path) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
        writer.write(b"PRI * HTTP/2.0\r\n\r\n")  # half a preface, then nothing
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()
        async with raw_h2(gw.ports["public"]) as idle:  # a preface, settings, no request
            await refused_with(idle, ErrorCodes.NO_ERROR)


async def test_drain_sends_goaway_and_finishes_streams_in_flight(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        route = {"name": "app", "proxy": {"upstreams": [a.url]}}
        config = with_routes(h2_config(tmp_path), route)
        async with in_process_gateway(config, tmp_path) as gw:
            async with raw_h2(gw.ports["public"]) as client:
                stream_id = client.request("/slow?s=0.5")
                await happens(a.arrived, "the stream reaches the backend")
                stopping = asyncio.create_task(gw.worker.stop())
                async with asyncio.timeout(5):
                    while not any(isinstance(f, GoAwayFrame) for f in client.frames()):
                        client.raw += await client.reader.read(65536)
                late = client.request("/")  # after the GOAWAY: refused, not served
                assert await client.closed()
                frames = client.frames()
            await stopping
    (refused,) = [f for f in frames if isinstance(f, RstStreamFrame)]
    assert (refused.stream_id, refused.error_code) == (late, ErrorCodes.REFUSED_STREAM)
    kinds = [type(f).__name__ for f in frames if f.stream_id in (0, stream_id)]
    # GOAWAY first, naming the stream in flight; then its answer, whole; then the close.
    goaway = next(f for f in frames if isinstance(f, GoAwayFrame))
    assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.NO_ERROR, stream_id)
    assert kinds.index("GoAwayFrame") < kinds.index("HeadersFrame")
    (head,) = [f for f in frames if isinstance(f, HeadersFrame)]
    body = b"".join(f.data for f in frames if isinstance(f, DataFrame))
    assert (head.headers[":status"], body) == ("200", b"late")
    assert "END_STREAM" in [f for f in frames if f.stream_id == stream_id][-1].flags


async def test_connect_is_405_and_a_request_without_authority_is_malformed(
    tmp_path: Path,
) -> None:
    async with in_process_gateway(h2_config(tmp_path), tmp_path) as gw:
        async with raw_h2(gw.ports["public"]) as client:
            connect = client.conn.encoder.encode([(":method", "CONNECT"), (":authority", "x:1")])
            client.send_raw(HeadersFrame(1, data=connect, flags=ENDS).serialize())
            assert not await client.closed(limit=0.5)
            (head,) = [f for f in client.frames() if isinstance(f, HeadersFrame)]
            body = b"".join(f.data for f in client.frames() if isinstance(f, DataFrame))
            assert (head.headers[":status"], body) == (
                "405", b"405 Method Not Allowed: CONNECT is not supported\n"
            )  # fmt: skip
        async with raw_h2(gw.ports["public"]) as client:
            block = client.conn.encoder.encode(
                [(":method", "GET"), (":path", "/"), (":scheme", "http")]
            )
            client.send_raw(HeadersFrame(1, data=block, flags=ENDS).serialize())
            await refused_with(client, ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 §8.3.1
        await still_serving(gw)


async def test_an_upload_whose_upstream_never_reads_is_held_by_flow_control(
    tmp_path: Path,
) -> None:
    """The client's window closes once the gateway's buffers for the body are full: the
    body waits at the client, not in the gateway."""

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(30)

    async with raw_backend(never_reads) as upstream:
        route = {"name": "app", "match": {"path_prefix": "/upload"},
                 "proxy": {"upstreams": [upstream]}}  # fmt: skip
        config = h2_config(tmp_path, limits={"max_body_bytes": 1 << 30})
        config["routes"].insert(0, route)
        async with in_process_gateway(config, tmp_path) as gw:
            async with raw_h2(gw.ports["public"]) as client:
                stream_id = client.conn.get_next_available_stream_id()
                client.conn.send_headers(stream_id, [
                    (":method", "POST"), (":path", "/upload"), (":scheme", "http"),
                    (":authority", "x")])  # fmt: skip
                client.flush()
                sent = 0
                loop = asyncio.get_running_loop()
                stalled_since = loop.time()
                while loop.time() - stalled_since < 1.0 and sent < 64 << 20:
                    while room := min(client.conn.local_flow_control_window(stream_id), 16384):
                        client.conn.send_data(stream_id, b"u" * room)
                        sent += room
                        stalled_since = loop.time()
                    client.flush()
                    await client.writer.drain()
                    with contextlib.suppress(TimeoutError):
                        await client.read(limit=0.2)  # the window updates
            await still_serving(gw)
    # What the kernel's socket buffers hold on loopback, plus the windows: not 64 MB.
    assert sent < 24 << 20, f"{sent} bytes went in without being read"
