"""The Segment HTTP API: official clients deliver unmodified; Segment's rules hold."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
from segment.analytics.client import Client

from gateway.events.spool import read_all
from tests.apache_kafka import ApacheKafka
from tests.client import fetch
from tests.events_support import SCHEMA, consume, tracking_config, values
from tests.ports import free_port
from tests.support import in_process_gateway, with_routes

KEY = "wk_test_123"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}


def segment_config(tmp_path: Path, bootstrap: str | None) -> dict[str, Any]:
    config = tracking_config(tmp_path, bootstrap, write_keys=[KEY])
    config = with_routes(
        config,
        {"name": "segment", "match": {"path_prefix": "/v1"}, "segment": {}},
        {"name": "collect", "collect": {}},
    )
    config["tracking"]["cors"] = {"allowed_origins": ["https://app.example.com"]}
    return config


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = AUTH if headers is None else headers
        async with session.post(url, data=data, headers=headers) as resp:
            return resp.status, await resp.json()


async def test_official_python_client_delivers(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = segment_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        client = Client(KEY, host=gw.url("").rstrip("/"), sync_mode=True, gzip=True)

        def calls() -> None:
            client.track("u1", "Signed Up", {"plan": "Pro"}, message_id="m-1")
            client.identify("u1", {"email": "a@example.com"})
            client.page("u1", "Docs", "Install")
            client.group("u1", "g-9", {"name": "ACME"})
            client.alias("anon-1", "u1")

        await asyncio.to_thread(calls)
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 5))
    for event in events:
        jsonschema.validate(event, SCHEMA)
    by_type = {e["event_type"]: e for e in events}
    assert sorted(by_type) == ["alias", "group", "identify", "page", "track"]
    track = by_type["track"]
    assert (track["event_name"], track["user_id"], track["message_id"]) == (
        "Signed Up",
        "u1",
        "m-1",
    )
    assert track["properties"] == {"plan": "Pro"}
    assert track["context"]["library"]["name"] == "analytics-python"
    assert by_type["identify"]["traits"] == {"email": "a@example.com"}
    assert by_type["page"]["event_name"] == "Install"
    assert by_type["group"]["group_id"] == "g-9"
    assert by_type["alias"]["previous_id"] == "anon-1"


async def test_track_fields_and_clock_skew_correction(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = segment_config(tmp_path, kafka_broker.bootstrap)
    # The client's clock runs an hour fast; the event happened 10 s before it was sent.
    client_now = datetime.now(UTC) + timedelta(hours=1)
    happened = (client_now - timedelta(seconds=10)).isoformat()
    message = {
        "userId": "u2", "event": "Clicked", "properties": {"Button": "Buy"},
        "context": {"ip": "1.2.3.4"}, "timestamp": happened, "sentAt": client_now.isoformat(),
        "messageId": "msg-42",
    }  # fmt: skip
    async with in_process_gateway(config, tmp_path) as gw:
        assert await post(gw.url("/v1/track"), message) == (200, {"success": True})
    (event,) = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1))
    jsonschema.validate(event, SCHEMA)
    received = datetime.fromisoformat(event["received_at"])
    corrected = datetime.fromisoformat(event["timestamp"])
    assert abs((received - corrected).total_seconds() - 10) < 0.01
    assert event["original_timestamp"] == happened
    assert event["sent_at"] == message["sentAt"]
    assert (event["message_id"], event["properties"]) == ("msg-42", {"Button": "Buy"})
    assert event["context"] == {"ip": "1.2.3.4"}


async def test_message_id_assigned_when_missing_and_short_path(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = segment_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        assert (await post(gw.url("/v1/i"), {"anonymousId": "a-1"}))[0] == 200
    (event,) = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1))
    assert event["event_type"] == "identify"
    assert event["message_id"] == event["event_id"]
    assert event["timestamp"] == event["received_at"]


async def test_write_key_in_body_and_auth_failures(tmp_path: Path) -> None:
    config = segment_config(tmp_path, None)
    message = {"userId": "u", "event": "E"}
    async with in_process_gateway(config, tmp_path) as gw:
        url = gw.url("/v1/track")
        assert (await post(url, {**message, "writeKey": KEY}, headers={}))[0] == 200
        assert await post(url, message, headers={}) == (
            401, {"code": "unauthorized", "message": "a write key is required"}
        )  # fmt: skip
        wrong = {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}
        assert await post(url, message, headers=wrong) == (
            401, {"code": "unauthorized", "message": "unknown write key"}
        )  # fmt: skip


async def test_validation_rules_and_dead_letter(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = segment_config(tmp_path, kafka_broker.bootstrap)
    cases = [
        ("/v1/track", {"event": "E"}, "userId or anonymousId is required"),
        ("/v1/track", {"userId": "u"}, "event is required for track"),
        ("/v1/group", {"userId": "u"}, "groupId is required for group"),
        ("/v1/alias", {"userId": "u"}, "previousId and userId are required for alias"),
        ("/v1/track", {"userId": "u", "event": "E", "timestamp": "yesterday"},
         "timestamp is not an ISO 8601 date-time"),
        ("/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "E"}, {"type": "x"}]},
         "batch[1]: type must be one of track, identify, page, screen, group, alias"),
        ("/v1/track", {"userId": "u", "event": "E", "properties": {"p": "x" * 33_000}},
         "message is larger than 32 KB"),
        # Skew correction would put it 10,000 years from now: not a 500.
        ("/v1/track", {"userId": "u", "event": "E", "timestamp": "9999-12-31T23:59:59Z",
                       "sentAt": "0001-01-01T00:00:00Z"},
         "timestamp corrected by sentAt is outside the years 1 to 9999"),
    ]  # fmt: skip
    async with in_process_gateway(config, tmp_path) as gw:
        for path, body, reason in cases:
            assert await post(gw.url(path), body) == (
                400, {"code": "invalid_request", "message": reason}
            )  # fmt: skip
        status, answer = await post(gw.url("/v1/batch"), b"x" * (500 * 1024 + 1))
        assert (status, answer["message"]) == (400, "request is larger than 500 KB")
    topic = config["kafka"]["dead_letter_topic"]
    dead = values(await consume(kafka_broker.bootstrap, topic, len(cases)))
    # Keys are random per record, so partitions interleave: compare as sets.
    assert sorted(d["reason"] for d in dead) == sorted(reason for _, _, reason in cases)
    first = next(d for d in dead if d["reason"] == cases[0][2])
    assert (json.loads(first["body"]), first["path"], first["truncated"]) == (
        {"event": "E"}, "/v1/track", False
    )  # fmt: skip


async def test_unauthenticated_garbage_is_not_kept(tmp_path: Path) -> None:
    config = segment_config(tmp_path, None)
    async with in_process_gateway(config, tmp_path) as gw:
        assert await post(gw.url("/v1/track"), b"{garbage", headers={}) == (
            401, {"code": "unauthorized", "message": "a write key is required"}
        )  # fmt: skip
        assert (await post(gw.url("/v1/track"), b"{garbage"))[0] == 400
    from gateway.events.spool import read_all

    # Only the caller with a valid key had its refused body kept.
    kept = [json.loads(r.value) for _, r in read_all(tmp_path / "spool")]
    assert [(d["event_type"], d["reason"]) for d in kept] == [
        ("dead_letter", "body is not valid JSON")
    ]


async def test_batch_and_gzip_body(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = segment_config(tmp_path, kafka_broker.bootstrap)
    batch = {
        "batch": [
            {"type": "track", "userId": f"u{i}", "event": "E", "properties": {"i": i}}
            for i in range(100)
        ],
        "sentAt": datetime.now(UTC).isoformat(),
    }
    async with in_process_gateway(config, tmp_path) as gw:
        headers = {**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"}
        status, _ = await post(
            gw.url("/v1/batch"), gzip.compress(json.dumps(batch).encode()), headers
        )
        assert status == 200
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 100))
    assert sorted(e["properties"]["i"] for e in events) == list(range(100))


async def test_cors_preflight_and_reflected_origin(tmp_path: Path) -> None:
    config = segment_config(tmp_path, None)
    async with in_process_gateway(config, tmp_path) as gw, aiohttp.ClientSession() as session:
        preflight = {
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        async with session.options(gw.url("/v1/track"), headers=preflight) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
            assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
            assert resp.headers["Access-Control-Max-Age"] == "600"
            assert resp.headers["Vary"] == "Origin"
        evil = {**preflight, "Origin": "https://evil.example"}
        async with session.options(gw.url("/tr/v1"), headers=evil) as resp:
            assert (resp.status, await resp.text()) == (403, "403 Forbidden: origin not allowed\n")
        async with session.get(
            gw.url("/tr/v1"), headers={"Origin": "https://evil.example"}
        ) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        headers = {"Origin": "https://app.example.com"}
        async with session.get(gw.url("/img/v1"), headers=headers) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert resp.headers["Vary"] == "Origin"


async def test_batch_is_all_or_nothing_when_the_queue_is_short(tmp_path: Path) -> None:
    config = segment_config(tmp_path, None)
    config["tracking"]["queue_size"] = 5
    batch = {"batch": [{"type": "track", "userId": "u", "event": "E"} for _ in range(6)]}
    async with in_process_gateway(config, tmp_path) as gw:
        async with aiohttp.ClientSession() as session:
            async with session.post(gw.url("/v1/batch"), json=batch, headers=AUTH) as resp:
                assert (resp.status, resp.headers["Retry-After"], await resp.json()) == (
                    503, "1", {"code": "overloaded", "message": "event queue is full; retry later"}
                )  # fmt: skip
        assert gw.worker.pipeline is not None and gw.worker.pipeline.queued == 0
        batch["batch"] = batch["batch"][:5]
        assert (await post(gw.url("/v1/batch"), batch))[0] == 200


async def test_turned_off_segment_route_answers_404_after_a_reload(tmp_path: Path) -> None:
    config = segment_config(tmp_path, None)
    message = {"userId": "u", "event": "E"}
    async with in_process_gateway(config, tmp_path) as gw:
        url = gw.url("/v1/track")
        assert (await post(url, message))[0] == 200
        config["routes"][0]["segment"] = {"enabled": False}
        gw.config_path.write_text(json.dumps(config))
        async with aiohttp.ClientSession() as session:
            async with session.post(gw.url("/_gateway/reload", listener="admin")) as resp:
                assert resp.status == 200
            async with session.post(url, json=message, headers=AUTH) as resp:
                assert resp.status == 404
                assert (await resp.text()).startswith(
                    "404 Not Found: no route for this host and path"
                )


async def test_fast_mode_refuses_what_a_full_spool_cannot_keep(tmp_path: Path) -> None:
    # Fault run F1: Kafka unreachable, spool full, fast mode. Every 200 must be an event
    # kept on disk; once the spool cannot take more, the answer is 503 with Retry-After.
    config = segment_config(tmp_path, f"127.0.0.1:{free_port()}")
    config["tracking"]["delivery"] = "fast"
    config["spool"]["max_bytes"] = 8192
    batch = {"batch": [{"type": "track", "userId": "u", "event": "E"} for _ in range(4)]}
    answers = []
    async with in_process_gateway(config, tmp_path) as gw:
        async with aiohttp.ClientSession() as session:
            for _ in range(12):
                async with session.post(gw.url("/v1/batch"), json=batch, headers=AUTH) as resp:
                    answers.append(
                        (resp.status, resp.headers.get("Retry-After"), await resp.json())
                    )
            async with session.get(gw.url("/_gateway/metrics", listener="admin")) as resp:
                metrics = await resp.text()
            async with session.get(gw.url("/_gateway/ready")) as resp:
                ready = await resp.json()
    accepted = [a for a in answers if a[0] == 200]
    refused = answers[len(accepted) :]
    assert accepted and refused, answers
    assert all(a == (200, None, {"success": True}) for a in accepted)
    assert all(
        a == (503, "1", {"code": "unavailable", "message": "events cannot be stored right now"})
        for a in refused
    ), answers
    assert ready["checks"]["events"] == {"ok": False, "detail": "spool full: events cannot be kept"}
    assert 'outcome="dropped"' not in metrics
    assert f'gateway_events_total{{outcome="refused",type="track"}} {len(refused) * 4}.0' in metrics
    kept = [json.loads(record.value) for _, record in read_all(tmp_path / "spool")]
    assert len(kept) == len(accepted) * 4


async def test_segment_records_and_dead_letters_say_their_source(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = segment_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        assert (await post(gw.url("/v1/identify"), {"userId": "u"}))[0] == 200
        assert (await post(gw.url("/v1/track"), {"userId": "u"}))[0] == 400  # no event
    (record,) = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1)
    (dead,) = await consume(kafka_broker.bootstrap, config["kafka"]["dead_letter_topic"], 1)
    assert dict(record.headers)["event_type"] == b"identify"
    assert dict(record.headers)["source"] == b"segment"
    assert dict(dead.headers)["event_type"] == b"dead_letter"
    assert dict(dead.headers)["source"] == b"segment"


async def test_every_member_a_client_sends_is_kept(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = segment_config(tmp_path, kafka_broker.bootstrap)
    message = {
        "type": "track", "event": "Signed Up", "userId": "u1", "writeKey": KEY,
        "properties": {"plan": "Pro"}, "integrations": {"All": False, "Mixpanel": True},
        "channel": "server", "version": 2, "_metadata": {"bundled": ["Segment.io"]},
        "custom": {"nested": [1, None, "x"]},
    }  # fmt: skip
    async with in_process_gateway(config, tmp_path) as gw:
        assert await post(gw.url("/v1/batch"), {"batch": [message]}) == (
            200, {"success": True}
        )  # fmt: skip
        assert (await post(gw.url("/v1/track"), b"{not json", headers=AUTH))[0] == 400
    (event,) = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1))
    jsonschema.validate(event, SCHEMA)
    assert event["integrations"] == {"All": False, "Mixpanel": True}
    assert event["extra"] == {
        "channel": "server", "version": 2, "_metadata": {"bundled": ["Segment.io"]},
        "custom": {"nested": [1, None, "x"]},
    }  # fmt: skip
    assert KEY not in json.dumps(event)  # the write key is a credential: dropped
    dead_topic = config["kafka"]["dead_letter_topic"]
    (dead,) = values(await consume(kafka_broker.bootstrap, dead_topic, 1))
    assert list(dead)[:4] == ["event_id", "event_time", "event_type", "event_name"]
    assert (dead["event_type"], dead["event_name"]) == ("dead_letter", "invalid_json")
    assert dead["event_time"] == dead["received_at"]


ORIGIN = {"Origin": "https://app.example.com"}


async def test_analytics_js_settings_point_back_at_the_route(tmp_path: Path) -> None:
    config = segment_config(tmp_path, None)
    config["routes"][0]["segment"] = {"integrations": {"Google Analytics 4": {"id": "G-1"}}}
    async with in_process_gateway(config, tmp_path) as gw:
        port = gw.ports["public"]
        status, headers, body = await fetch(gw.url(f"/v1/projects/{KEY}/settings"), headers=ORIGIN)
        unknown = await fetch(gw.url("/v1/projects/nope/settings"), headers=ORIGIN)
    assert (status, headers["Cache-Control"]) == (200, "public, max-age=60")
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    settings = json.loads(body)
    assert settings["integrations"]["Segment.io"]["apiKey"] == KEY
    assert settings["integrations"]["Segment.io"]["apiHost"] == f"127.0.0.1:{port}/v1"
    assert settings["integrations"]["Segment.io"]["protocol"] == "http"
    assert settings["integrations"]["Google Analytics 4"] == {"id": "G-1"}
    assert (settings["analyticsNextEnabled"], settings["metrics"]) == (True, {"sampleRate": 0})
    assert unknown[0] == 404
    assert unknown[1]["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert unknown[2].endswith(b"no such write key\n")


async def test_browser_batches_and_text_plain_bodies_are_taken(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = segment_config(tmp_path, kafka_broker.bootstrap)
    beacon = {**AUTH, **ORIGIN, "Content-Type": "text/plain"}  # as sendBeacon sends it
    async with in_process_gateway(config, tmp_path) as gw:
        batch = json.dumps({"batch": [{"type": "page", "anonymousId": "a1", "name": "Home"}]})
        status, headers, _ = await fetch(gw.url("/v1/b"), "POST", data=batch, headers=beacon)
        single = json.dumps({"anonymousId": "a1", "event": "Clicked"})
        assert (await fetch(gw.url("/v1/t"), "POST", data=single, headers=beacon))[0] == 200
    assert (status, headers["Access-Control-Allow-Origin"]) == (200, "https://app.example.com")
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 2))
    assert sorted(e["event_type"] for e in events) == ["page", "track"]


async def test_error_answers_of_tracking_routes_carry_cors(tmp_path: Path) -> None:
    config = segment_config(tmp_path, None)
    config["routes"][1]["max_body_bytes"] = 16
    async with in_process_gateway(config, tmp_path) as gw:
        answers = [
            await fetch(gw.url("/v1/nope"), "POST", headers=ORIGIN),
            await fetch(gw.url("/v1/track"), "POST", data=b"{}", headers=ORIGIN),  # no key
            await fetch(gw.url("/tr/v1/odd"), headers=ORIGIN),
            await fetch(gw.url("/tr/v1"), "POST", data=b"x" * 64, headers=ORIGIN),
        ]
    assert [status for status, _, _ in answers] == [404, 401, 400, 413]
    for _, headers, _ in answers:
        assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert headers["Vary"] == "Origin"
