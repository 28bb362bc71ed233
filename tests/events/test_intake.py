"""Rill's intake protocol: posted as Rill's activity sink posts (NDJSON, Basic auth),
every event in Kafka byte for byte, keyed by its id, routed by its type."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.apache_kafka import ApacheKafka
from tests.events_support import consume, tracking_config
from tests.support import in_process_gateway, with_routes

USER, PASSWORD = "rill", "s3cret-intake"


def intake_config(tmp_path: Path, bootstrap: str | None, **route: Any) -> dict[str, Any]:
    config = tracking_config(tmp_path, bootstrap)
    intake = {"name": "intake", "match": {"path_prefix": "/intake"},
              "intake": {"users": [{"username": USER, "password": PASSWORD}]}, **route}  # fmt: skip
    config = with_routes(config, intake)
    if bootstrap is not None:
        config["kafka"]["topics"] = {"behavioral": config["kafka"]["topic"] + "-behavioral"}
    return config


def rill_event(i: int, event_type: str, **attrs: Any) -> bytes:
    """One line as Rill's Event.MarshalJSON writes it: its data, the four fields beside."""
    return json.dumps({
        "service_name": "runtime", "install_id": "i-1", **attrs,
        "event_id": f"0193a5b8-0000-7000-8000-00000000000{i}",
        "event_time": "2026-12-02T06:00:00.123456789Z",
        "event_type": event_type, "event_name": f"name-{i}",
    }, separators=(",", ":")).encode()  # fmt: skip


async def post_like_rill(
    url: str, body: bytes, *, user: str = USER, password: str = PASSWORD, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """The request Rill's intakeSink.send makes with Go's net/http: POST, SetBasicAuth,
    no Content-Type."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    sent = {"Authorization": f"Basic {auth}", "User-Agent": "Go-http-client/1.1",
            "Accept-Encoding": "gzip", **headers}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url, data=body, headers=sent, skip_auto_headers=["Content-Type"]
        ) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def test_events_arrive_byte_for_byte_keyed_and_routed(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = intake_config(tmp_path, kafka_broker.bootstrap)
    lines = [rill_event(1, "behavioral", user_id="u-7"), rill_event(2, "metric", value=3.5),
             rill_event(3, "log", message="hé")]  # fmt: skip
    async with in_process_gateway(config, tmp_path) as gw:
        status, _, _ = await post_like_rill(gw.url("/intake"), b"".join(x + b"\n" for x in lines))
    assert status == 204
    topic = config["kafka"]["topic"]
    (behavioral,) = await consume(kafka_broker.bootstrap, topic + "-behavioral", 1)
    others = await consume(kafka_broker.bootstrap, topic, 2)
    assert behavioral.value == lines[0]
    assert sorted(r.value for r in others) == sorted(lines[1:])
    for record in [behavioral, *others]:
        assert record.key == json.loads(record.value)["event_id"].encode()
        headers = dict(record.headers)
        assert headers["event_type"] == json.loads(record.value)["event_type"].encode()
        assert (headers["source"], headers["user"], headers["node"]) == (
            b"intake", b"rill", b"test-node"
        )  # fmt: skip
        assert headers["client_ip"] == b"127.0.0.1" and headers["received_at"]


async def test_a_bad_line_keeps_nothing_and_names_line_and_field(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = intake_config(tmp_path, kafka_broker.bootstrap)
    bad = json.dumps({"event_id": "e-2", "event_time": "2026-12-02T06:00:00Z",
                      "event_type": "log", "event_name": ""}).encode()  # fmt: skip
    body = rill_event(1, "log") + b"\n" + bad + b"\n"
    async with in_process_gateway(config, tmp_path) as gw:
        status, _, text = await post_like_rill(gw.url("/intake"), body)
        bad_time = rill_event(3, "log").replace(b"2026-12-02T06", b"yesterday")
        assert (await post_like_rill(gw.url("/intake"), bad_time))[2].endswith(
            b"line 1: event_time is not an RFC 3339 time\n"
        )
        assert (await post_like_rill(gw.url("/intake"), b"[1]"))[0] == 400
        good = await post_like_rill(gw.url("/intake"), rill_event(4, "log"))
    assert (status, text) == (
        400, b"400 Bad Request: line 2: event_name must be a non-empty string\n"
    )  # fmt: skip
    assert good[0] == 204
    (record,) = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1)
    assert json.loads(record.value)["event_name"] == "name-4"  # line 1 of the bad body: gone
    dead = await consume(kafka_broker.bootstrap, config["kafka"]["dead_letter_topic"], 3)
    reasons = {json.loads(r.value)["reason"]: json.loads(r.value) for r in dead}
    refused = reasons["line 2: event_name must be a non-empty string"]
    assert (refused["event_name"], refused["body"]) == ("invalid_intake", body.decode())
    assert dict(dead[0].headers)["source"] == b"intake"


async def test_credentials_are_checked(tmp_path: Path) -> None:
    config = intake_config(tmp_path, None)
    async with in_process_gateway(config, tmp_path) as gw:
        wrong = await post_like_rill(gw.url("/intake"), rill_event(1, "log"), password="nope")
        async with aiohttp.ClientSession() as session:
            async with session.post(gw.url("/intake"), data=rill_event(1, "log")) as resp:
                missing = (resp.status, resp.headers["WWW-Authenticate"], await resp.read())
    assert wrong[0] == 401 and wrong[2].endswith(b"unknown user or wrong password\n")
    assert missing == (401, 'Basic realm="intake", charset="UTF-8"',
                       b"401 Unauthorized: HTTP Basic credentials are required\n")  # fmt: skip


async def test_gzip_arrays_single_objects_and_size_limits(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = intake_config(tmp_path, kafka_broker.bootstrap, max_body_bytes=4096)
    async with in_process_gateway(config, tmp_path) as gw:
        zipped = gzip.compress(rill_event(1, "log") + b"\n")
        assert (await post_like_rill(gw.url("/intake"), zipped, **{"Content-Encoding": "gzip"}))[
            0
        ] == 204
        array = b"[" + rill_event(2, "log") + b"," + rill_event(3, "log") + b"]"
        assert (await post_like_rill(gw.url("/intake"), array))[0] == 204
        assert (await post_like_rill(gw.url("/intake"), rill_event(4, "log")))[0] == 204
        big = rill_event(5, "log", pad="x" * 5000)
        assert (await post_like_rill(gw.url("/intake"), big))[0] == 413
    records = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 4)
    assert sorted(json.loads(r.value)["event_name"] for r in records) == [
        "name-1", "name-2", "name-3", "name-4"
    ]  # fmt: skip


async def test_line_limit_holds_for_ndjson_lines_and_array_items(tmp_path: Path) -> None:
    config = intake_config(tmp_path, None)
    config["routes"][0]["intake"]["max_line_bytes"] = 1024
    long = rill_event(2, "log", pad="x" * 1100)
    async with in_process_gateway(config, tmp_path) as gw:
        line = await post_like_rill(gw.url("/intake"), rill_event(1, "log") + b"\n" + long)
        item = await post_like_rill(
            gw.url("/intake"), b"[" + rill_event(1, "log") + b"," + long + b"]"
        )
    assert line[::2] == (400, b"400 Bad Request: line 2: longer than 1024 bytes\n")
    assert item[::2] == (400, b"400 Bad Request: line 2: longer than 1024 bytes\n")
