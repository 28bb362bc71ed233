"""tr/v1/ws: tracker events over a WebSocket, text and LZ4 frames, bounded and closed
with a code and reason on a bad frame."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from pathlib import Path
from typing import Any

import aiohttp
import cramjam
import pytest

from tests.apache_kafka import ApacheKafka
from tests.client import fetch
from tests.clock import jump_clock, settles
from tests.events_support import consume, tracking_config, values
from tests.support import in_process_gateway

VID = "0193a5b8-7c1d-7e2f-8a3b-4c5d6e7f8091"


def lz4_frame(event: dict[str, object]) -> bytes:
    """What the tracker's clients send: an LZ4 block, its size in front (lz4.block)."""
    return bytes(cramjam.lz4.compress_block(json.dumps(event).encode()))


async def test_text_and_lz4_frames_become_events(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(gw.url("/tr/v1/ws")) as ws:
                await ws.send_str(json.dumps({"ename": "opened", "n": 1}))
                await ws.send_bytes(lz4_frame({"ename": "scrolled", "vid": VID, "depth": 80}))
        metrics = (await fetch(gw.url("/_gateway/metrics", listener="admin")))[2].decode()
    records = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 2)
    events = {e["event_name"]: e for e in values(records)}
    assert events["opened"]["properties"] == {"ename": "opened", "n": 1}
    assert events["scrolled"]["properties"] == {"ename": "scrolled", "vid": VID, "depth": 80}
    assert events["scrolled"]["anonymous_id"] == VID  # the client's own visitor id
    assert events["opened"]["anonymous_id"]  # the handshake's cookie visitor
    assert all(e["path"] == "/tr/v1/ws" for e in events.values())
    assert 'gateway_websocket_frames_total{outcome="accepted"} 2.0' in metrics


async def close_of(gw: Any, frame: str | bytes) -> tuple[int | None, str]:
    """The close code and reason the gateway answers ``frame`` with."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(gw.url("/tr/v1/ws")) as ws:
            await (ws.send_str(frame) if isinstance(frame, str) else ws.send_bytes(frame))
            message = await ws.receive(timeout=5)
            return ws.close_code, message.extra or ""


async def test_bad_frames_close_with_a_code_and_the_reason(tmp_path: Path) -> None:
    config = tracking_config(tmp_path, None)
    config["routes"][1]["collect"] = {"ws_max_frame_bytes": 1024}
    async with in_process_gateway(config, tmp_path) as gw:
        assert await close_of(gw, "{not json") == (1007, "frame is not valid JSON")
        assert await close_of(gw, "[1, 2]") == (1007, "frame must be a JSON object")
        huge = struct.pack("<I", 1 << 20) + b"\x00" * 16  # claims 1 MiB uncompressed
        assert await close_of(gw, huge) == (1009, "event larger than 1024 bytes")
        assert await close_of(gw, b"\x05\x00\x00\x00garbage") == (
            1007, "binary frame is not an LZ4 block"
        )  # fmt: skip
        code, _ = await close_of(gw, json.dumps({"pad": "x" * 2000}))
        assert code == 1009  # past max_msg_size: aiohttp closes, message too big
        plain = await fetch(gw.url("/tr/v1/ws"))
        metrics = (await fetch(gw.url("/_gateway/metrics", listener="admin")))[2].decode()
    assert plain[0] == 400 and plain[1]["Upgrade"] == "websocket"
    assert 'gateway_websocket_frames_total{outcome="refused"} 5.0' in metrics


def frames(gw: Any, outcome: str) -> float:
    """This worker's count of tracker WebSocket frames with ``outcome``, read in process."""
    name = f'gateway_websocket_frames_total{{outcome="{outcome}"}} '
    text = gw.worker.metrics.render().decode()
    return sum(float(line[len(name) :]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.asyncio_loop  # its clock is frozen: the rate's waits end only when moved
async def test_frames_over_the_rate_wait_and_are_all_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tracking_config(tmp_path, None)
    config["routes"][1]["collect"] = {"ws_frames_per_second": 2}
    async with in_process_gateway(config, tmp_path) as gw:
        clock = jump_clock(monkeypatch, frozen=True)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(gw.url("/tr/v1/ws"), autoping=False) as ws:
                    for n in range(5):
                        await ws.send_str(json.dumps({"ename": "e", "n": n}))
                    await ws.ping(b"after the five")  # answered once the five are read
                    await settles(lambda: frames(gw, "accepted") >= 2, "two frames taken")
                    assert frames(gw, "accepted") == 2  # the third waits for room
                    clock.advance(0.5)
                    await settles(lambda: frames(gw, "accepted") >= 3, "a third frame taken")
                    assert frames(gw, "accepted") == 3
                    clock.advance(1.0)
                    pong = await ws.receive()
                    await ws.close()
        finally:
            clock.thaw()  # the gateway's stop waits on timers
    assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"after the five")
    assert ws.close_code == 1000  # the connection waited; it was never cut
    assert [frames(gw, outcome) for outcome in ("accepted", "dropped", "refused")] == [5, 0, 0]


async def test_a_frame_of_no_kind_rfc_6455_defines_is_a_protocol_error(tmp_path: Path) -> None:
    """aiohttp's reader refuses it before the handler sees it: 1002, no reason."""
    config = tracking_config(tmp_path, None)
    async with in_process_gateway(config, tmp_path) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
        key = base64.b64encode(b"sixteen byte key").decode()
        writer.write(
            b"GET /tr/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: " + key.encode() + b"\r\n\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        # FIN, opcode 0x3 (reserved), masked, 2 bytes of payload.
        writer.write(bytes([0x83, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2]))
        close = await reader.read()
        writer.close()
        refused = frames(gw, "refused")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert close == b"\x88\x02" + struct.pack("!H", 1002)  # CLOSE, code 1002, no reason
    assert refused == 1
