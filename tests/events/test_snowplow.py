"""The snowplow handler over HTTP: answers as Snowplow's collector does, events in Kafka,
the network user id cookie, SP-Anonymous, and bad input refused with a dead letter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema

from gateway.handlers.collect import PIXEL
from tests.apache_kafka import ApacheKafka
from tests.events.test_snowplow_protocol import b64
from tests.events_support import SCHEMA, consume, tracking_config, values
from tests.support import in_process_gateway, with_routes

PAYLOAD = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
UUID = "5f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b"


def snowplow_config(tmp_path: Path, bootstrap: str | None, **snowplow: Any) -> dict[str, Any]:
    config = tracking_config(
        tmp_path, bootstrap, cors={"allowed_origins": ["https://shop.example"]}
    )
    route = {"name": "snowplow", "match": {"path_prefix": "/"}, "snowplow": snowplow}
    return with_routes(config, route)


async def request(
    method: str, url: str, **kwargs: Any
) -> tuple[int, aiohttp.typedefs.LooseHeaders, bytes]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.request(method, url, **kwargs) as resp:
            return resp.status, resp.headers, await resp.read()


async def test_get_pixel_sets_the_network_cookie_and_lands_in_kafka(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = snowplow_config(tmp_path, kafka_broker.bootstrap)
    query = {"e": "pv", "url": "https://shop.example/", "page": "Home", "tv": "js-4.1.0",
             "p": "web", "eid": "e-1", "duid": "d-1", "dtm": "1764655200000"}  # fmt: skip
    async with in_process_gateway(config, tmp_path) as gw:
        first = await request("GET", gw.url("/i"), params=query)
        cookie = first[1]["Set-Cookie"]
        nuid = cookie.split(";")[0].removeprefix("sp=")
        again = await request(
            "GET", gw.url("/ice.png"), params=query, headers={"Cookie": f"sp={nuid}"}
        )
        vendor = await request("GET", gw.url("/com.acme/tp1"), params=query)
    assert first[0] == 200 and first[2] == PIXEL
    assert (first[1]["Content-Type"], first[1]["Cache-Control"]) == (
        "image/gif",
        "no-store, max-age=0",
    )
    assert cookie == f"sp={nuid}; Max-Age=31536000; Path=/; SameSite=Lax; HttpOnly"
    assert again[1]["Set-Cookie"].startswith(f"sp={nuid};")  # refreshed, the same id
    assert vendor[0] == 200 and vendor[2] == PIXEL
    records = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 3)
    events = values(records)
    for event in events:
        jsonschema.validate(event, SCHEMA)
    event = events[0]
    assert (event["event_type"], event["event_name"], event["anonymous_id"]) == (
        "page", "page_view", "d-1"
    )  # fmt: skip
    assert event["context"]["networkUserId"] == nuid
    assert (event["message_id"], event["original_timestamp"]) == ("e-1", "2025-12-02T06:00:00.000Z")
    assert event["extra"] == query and event["path"] == "/i" and event["ip"] == "127.0.0.1"
    assert dict(records[0].headers)["source"] == b"snowplow"
    assert records[0].key == b"d-1"


async def test_post_tp2_answers_ok_and_keeps_every_event_in_order(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = snowplow_config(tmp_path, kafka_broker.bootstrap)
    config["kafka"]["topics"] = {"transaction": config["kafka"]["topic"] + "-tr"}
    data = [
        {"e": "se", "se_ca": "shop", "se_ac": "add", "se_va": "3", "eid": "e-1", "duid": "d-2"},
        {"e": "tr", "tr_id": "o-1", "tr_tt": "30", "eid": "e-2", "duid": "d-2"},
        {"e": "pp", "pp_mix": "0", "pp_max": "10", "url": "https://shop.example/", "duid": "d-2"},
    ]
    async with in_process_gateway(config, tmp_path) as gw:
        status, headers, body = await request(
            "POST", gw.url("/com.snowplowanalytics.snowplow/tp2"),
            data=json.dumps({"schema": PAYLOAD, "data": data}),
            headers={"Content-Type": "application/json; charset=UTF-8",
                     "Origin": "https://shop.example"},
        )  # fmt: skip
    assert (status, body, headers["Content-Type"]) == (200, b"ok", "text/plain; charset=utf-8")
    assert headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    topic = config["kafka"]["topic"]
    others = values(await consume(kafka_broker.bootstrap, topic, 2))
    (transaction,) = values(await consume(kafka_broker.bootstrap, topic + "-tr", 1))
    assert [(e["event_type"], e["event_name"]) for e in others] == [
        ("track", "add"), ("page_ping", "page_ping")
    ]  # fmt: skip
    assert others[0]["properties"] == {"category": "shop", "action": "add", "value": 3.0}
    assert others[1]["properties"]["max_x"] == 10
    assert transaction["properties"] == {"order_id": "o-1", "total": 30.0}
    assert {e["anonymous_id"] for e in [*others, transaction]} == {"d-2"}


async def test_sp_anonymous_sets_no_cookie_and_keeps_no_ip_and_nuid_is_honoured(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = snowplow_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        held = {"SP-Anonymous": "*", "Cookie": f"sp={UUID}"}
        anonymous = await request("GET", gw.url("/i"), params={"e": "pv"}, headers=held)
        named = await request("GET", gw.url("/i"), params={"e": "pv", "nuid": UUID})
    # The id the browser held is dropped (as the collector does), no new one is set.
    assert anonymous[0] == 200
    assert anonymous[1].getall("Set-Cookie") == ["sp=; Max-Age=0; Path=/; SameSite=Lax; HttpOnly"]
    assert named[1]["Set-Cookie"].startswith(f"sp={UUID};")
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 2))
    # Different keys, different partitions: told apart by content, not by order.
    first, second = sorted(events, key=lambda e: e["anonymous_id"] is not None)
    assert (first["ip"], first["anonymous_id"]) == (None, None)
    assert "networkUserId" not in first["context"]
    assert (second["anonymous_id"], second["context"]["networkUserId"]) == (UUID, UUID)


async def test_bad_input_is_refused_with_the_reason_and_kept_as_a_dead_letter(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = snowplow_config(tmp_path, kafka_broker.bootstrap)
    tp2 = "/com.snowplowanalytics.snowplow/tp2"
    good = {"e": "pv", "eid": "kept"}
    async with in_process_gateway(config, tmp_path) as gw:
        bad_b64 = await request("POST", gw.url(tp2), json={
            "schema": PAYLOAD, "data": [good, {"e": "pv", "cx": "not*base64"}]})  # fmt: skip
        bad_json = await request("POST", gw.url(tp2), data=b"{nope")
        wrong_schema = await request("POST", gw.url(tp2), json={
            "schema": "iglu:com.acme/x/jsonschema/1-0-0", "data": [good]})  # fmt: skip
        pixel = await request("GET", gw.url("/i"), params={"e": "ue", "ue_px": b64([1])})
        fine = await request("POST", gw.url(tp2), json={"schema": PAYLOAD, "data": [good]})
    assert bad_b64[::2] == (400, b"400 Bad Request: data[1]: cx: not base64url\n")
    assert bad_json[::2] == (400, b"400 Bad Request: body is not valid JSON\n")
    assert wrong_schema[0] == 400 and b"self-describing JSON with schema" in wrong_schema[2]
    assert pixel[::2] == (200, PIXEL)  # a pixel always answers its GIF
    assert fine[0] == 200
    (kept,) = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1))
    assert kept["message_id"] == "kept"  # the refused request's good event: not kept
    dead = await consume(kafka_broker.bootstrap, config["kafka"]["dead_letter_topic"], 4)
    letters = {d["reason"]: d for d in values(dead)}  # partitions: in no set order
    assert sorted(letters) == sorted([
        "data[1]: cx: not base64url", "body is not valid JSON",
        f"body must be a self-describing JSON with schema {PAYLOAD[:-3]}*",
        "ue: must be self-describing JSON with schema "
        "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-*",
    ])  # fmt: skip
    assert {d["event_name"] for d in letters.values()} == {"invalid_snowplow"}
    assert letters["body is not valid JSON"]["body"] == "{nope"
    assert next(d for r, d in letters.items() if r.startswith("ue:"))["body"].startswith(
        "e=ue&ue_px="
    )
    assert dict(dead[0].headers)["source"] == b"snowplow"


async def test_paths_methods_preflight_and_custom_vendor_paths(tmp_path: Path) -> None:
    config = snowplow_config(
        tmp_path, None, paths={"/com.acme/track": "/com.snowplowanalytics.snowplow/tp2"}
    )
    async with in_process_gateway(config, tmp_path) as gw:
        custom = await request("POST", gw.url("/com.acme/track"),
                               json={"schema": PAYLOAD, "data": [{"e": "pv"}]})  # fmt: skip
        preflight = await request(
            "OPTIONS", gw.url("/com.snowplowanalytics.snowplow/tp2"),
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"},
        )  # fmt: skip
        nowhere = await request("GET", gw.url("/a/b/c"))
        post_pixel = await request("POST", gw.url("/i"), data=b"")
        other_vendor_post = await request("POST", gw.url("/com.acme/v1"), data=b"{}")
    assert custom[::2] == (200, b"ok")
    assert preflight[0] == 204
    assert preflight[1]["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "POST" in preflight[1]["Access-Control-Allow-Methods"]
    assert nowhere[::2] == (404, b"404 Not Found: no such Snowplow endpoint\n")
    assert (post_pixel[0], post_pixel[1]["Allow"]) == (405, "GET, HEAD")
    assert (other_vendor_post[0], other_vendor_post[1]["Allow"]) == (405, "GET, HEAD")


async def test_too_many_events_and_too_large_bodies_are_refused(tmp_path: Path) -> None:
    config = snowplow_config(tmp_path, None, max_events=2)
    config["routes"][0]["max_body_bytes"] = 2048
    tp2 = "/com.snowplowanalytics.snowplow/tp2"
    async with in_process_gateway(config, tmp_path) as gw:
        many = await request(
            "POST", gw.url(tp2), json={"schema": PAYLOAD, "data": [{"e": "pv"}] * 3}
        )
        padded = {"schema": PAYLOAD, "data": [{"e": "pv", "x": "y" * 3000}]}
        big = await request("POST", gw.url(tp2), json=padded)
    assert many[::2] == (400, b"400 Bad Request: more than 2 events in one request\n")
    assert big[0] == 413
