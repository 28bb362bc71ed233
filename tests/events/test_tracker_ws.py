"""tr/v1/ws: tracker events over a WebSocket, text and LZ4 frames, bounded and closed
with a code and reason on a bad frame."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import aiohttp
import cramjam

from tests.client import fetch
from tests.conftest import Broker
from tests.events_support import consume, tracking_config, values
from tests.support import in_process_gateway

VID = "0193a5b8-7c1d-7e2f-8a3b-4c5d6e7f8091"


def lz4_frame(event: dict[str, object]) -> bytes:
    """What the tracker's clients send: an LZ4 block, its size in front (lz4.block)."""
    return bytes(cramjam.lz4.compress_block(json.dumps(event).encode()))


async def test_text_and_lz4_frames_become_events(tmp_path: Path, kafka_broker: Broker) -> None:
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
