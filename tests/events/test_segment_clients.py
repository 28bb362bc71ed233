"""Segment-protocol server libraries nobody here wrote deliver every call type with every
top-level member they sent kept: analytics-node (npm) and rudder-sdk-python."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.apache_kafka import ApacheKafka
from tests.events_support import consume, tracking_config, values
from tests.support import in_process_gateway, with_routes

KEY = "wk_clients_1"
NODE_CLIENT = Path(__file__).parent.parent / "browser" / "send_node.mjs"
# Where a member of a Segment message lands in the envelope; every other one: extra.
MAPPED = {
    "userId": "user_id", "anonymousId": "anonymous_id", "properties": "properties",
    "traits": "traits", "context": "context", "groupId": "group_id",
    "previousId": "previous_id", "messageId": "message_id", "integrations": "integrations",
    "timestamp": "original_timestamp",
}  # fmt: skip


def assert_kept(message: dict[str, Any], event: dict[str, Any]) -> None:
    """Every member of ``message`` is in ``event``: mapped, named, or verbatim in extra."""
    extra = event["extra"] or {}
    for key, value in message.items():
        if key in MAPPED:
            assert event[MAPPED[key]] == value, (key, event[MAPPED[key]], value)
        elif key == "type":
            assert event["event_type"] == value
        elif key in ("event", "name"):
            assert event["event_name"] == value
        elif key == "writeKey":
            assert key not in extra
        else:
            assert extra[key] == value, (key, extra)


def clients_config(tmp_path: Path, bootstrap: str) -> dict[str, Any]:
    config = tracking_config(tmp_path, bootstrap, write_keys=[KEY])
    return with_routes(config, {"name": "segment", "match": {"path_prefix": "/v1"}, "segment": {}})


def by_message_id(records: list[Any]) -> dict[str, dict[str, Any]]:
    return {event["message_id"]: event for event in values(records)}


async def test_analytics_node_delivers_every_call_and_member(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = clients_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        process = await asyncio.create_subprocess_exec(
            "node", str(NODE_CLIENT), gw.url("").rstrip("/"), KEY,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    sent = [message for line in out.decode().splitlines() for message in json.loads(line)["batch"]]
    assert sorted(m["type"] for m in sent) == sorted(
        ["track", "identify", "page", "screen", "group", "alias"]
    )
    events = by_message_id(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 6))
    for message in sent:
        assert_kept(message, events[message["messageId"]])
    assert all(events[m["messageId"]]["extra"]["_metadata"] for m in sent)  # the library's


async def test_rudder_sdk_python_delivers_every_call_and_member(
    tmp_path: Path, kafka_broker: ApacheKafka, caplog: pytest.LogCaptureFixture
) -> None:
    import rudderstack.analytics as rudder

    caplog.set_level(logging.DEBUG, "rudderstack")
    config = clients_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        rudder.write_key = KEY
        rudder.dataPlaneUrl = gw.url("").rstrip("/")
        rudder.sync_mode = True
        rudder.gzip = True

        def calls() -> None:
            rudder.track("u1", "Signed Up", {"plan": "Pro"}, integrations={"All": True})
            rudder.identify("u1", {"email": "a@example.com"})
            rudder.page("u1", "Guides", "Docs", {"path": "/docs"})
            rudder.screen("u1", "App", "Home")
            rudder.group("u1", "g-9", {"name": "ACME"})
            rudder.alias("anon-9", "u1")
            rudder.flush()

        try:
            await asyncio.to_thread(calls)
        finally:
            rudder.default_client = None
    bodies = [r.getMessage().removeprefix("making request: ") for r in caplog.records
              if r.getMessage().startswith("making request: ")]  # fmt: skip
    sent = [message for body in bodies for message in json.loads(body)["batch"]]
    assert len(sent) == 6
    events = by_message_id(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 6))
    for message in sent:
        assert_kept(message, events[message["messageId"]])
