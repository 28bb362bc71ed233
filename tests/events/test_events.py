"""Tracker endpoints to a real broker: what the client sends is what lands on Kafka."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from gateway.events.spool import read_all
from gateway.handlers.collect import PIXEL
from tests.apache_kafka import ApacheKafka
from tests.events_support import SCHEMA, consume, tracking_config, values
from tests.support import in_process_gateway

VID = "0193a5b8-7c1d-7e2f-8a3b-4c5d6e7f8091"


async def request(
    method: str, url: str, **kwargs: Any
) -> tuple[int, aiohttp.ClientResponse, bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as resp:
        return resp.status, resp, await resp.read()


async def test_tuplets_and_query_become_one_event(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        status, resp, body = await request(
            "GET",
            gw.url(f"/tr/v1/vid/{VID}/ename/signup/score/6?Plan=Pro%20Max&utm_source=mail"),
            headers={"User-Agent": "ua/1", "Referer": "https://example.com/p"},
        )
        assert (status, body) == (204, b"")
    (record,) = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1)
    event = json.loads(record.value)
    jsonschema.validate(event, SCHEMA)
    assert event["properties"] == {
        "vid": VID, "ename": "signup", "score": "6", "Plan": "Pro Max", "utm_source": "mail"
    }  # fmt: skip
    assert (event["event_type"], event["event_name"]) == ("track", "signup")
    # The client's own visitor id is its identity and record key; no cookie is set.
    assert event["anonymous_id"] == VID and "vid" not in resp.cookies
    assert record.key == VID.encode()
    assert event["path"] == f"/tr/v1/vid/{VID}/ename/signup/score/6"
    assert event["query"] == "Plan=Pro%20Max&utm_source=mail"
    assert (event["user_agent"], event["referer"]) == ("ua/1", "https://example.com/p")
    assert (event["ip"], event["method"]) == ("127.0.0.1", "GET")
    assert event["gateway"] == {"node": "test-node", "version": "0.1.0", "schema": 1}


async def test_post_json_body_and_str_returns_event_id(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        payload = {
            "event": "Order Placed",
            "total": 12.5,
            "items": [{"sku": "A-1"}],
            "Case": "KeEp",
        }
        status, _, body = await request("POST", gw.url("/str/v1/src/web"), json=payload)
    assert status == 200
    event_id = json.loads(body)["event_id"]
    (event,) = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1))
    jsonschema.validate(event, SCHEMA)
    assert event["event_id"] == event_id
    assert event["event_name"] == "Order Placed"
    assert event["properties"] == {"src": "web", **payload}


async def test_pixel_answers_exact_gif_and_records_event(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        status, resp, body = await request("GET", gw.url("/img/v1/campaign/c42?ename=open"))
    assert (status, body) == (200, PIXEL)
    # GIF89a, 1x1, a two-colour table, a graphic control extension marking colour 0
    # transparent, one image block, trailer.
    assert PIXEL == (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
        b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00"
        b"\x02\x01D\x00;"
    )
    assert resp.headers["Content-Type"] == "image/gif"
    assert resp.headers["Cache-Control"] == "no-store, max-age=0"
    (event,) = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1))
    assert (event["event_type"], event["event_name"]) == ("pixel", "open")
    assert event["properties"] == {"campaign": "c42", "ename": "open"}


async def test_query_wins_over_tuplets_and_pixel_takes_only_get(tmp_path: Path) -> None:
    config = tracking_config(tmp_path, None)
    async with in_process_gateway(config, tmp_path) as gw:
        assert (await request("GET", gw.url("/tr/v1/plan/path?plan=query")))[0] == 204
        assert gw.worker.pipeline is not None
        status, resp, _ = await request("POST", gw.url("/img/v1"))
        assert (status, resp.headers["Allow"]) == (405, "GET, HEAD")
    from gateway.events.spool import read_all

    (record,) = [r for _, r in read_all(tmp_path / "spool")]
    assert json.loads(record.value)["properties"] == {"plan": "query"}


async def test_malformed_pixel_still_answers_gif(tmp_path: Path) -> None:
    async with in_process_gateway(tracking_config(tmp_path, None), tmp_path) as gw:
        status, _, body = await request("GET", gw.url("/img/v1/odd"))
    assert (status, body) == (200, PIXEL)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "expected"),
    [
        ("GET", "/tr/v1/a/b/c", {}, "400 Bad Request: path tuplets must come in key/value pairs\n"),
        ("POST", "/tr/v1", {"data": b"{nope"}, "400 Bad Request: body is not valid JSON\n"),
        ("POST", "/tr/v1", {"json": [1, 2]}, "400 Bad Request: body must be a JSON object\n"),
        ("PUT", "/tr/v1", {}, "405 Method Not Allowed: use GET or POST\n"),
        ("GET", "/zz/v1", {}, "404 Not Found: no such tracker endpoint\n"),
    ],
)
async def test_bad_tracker_input(
    tmp_path: Path, method: str, path: str, kwargs: dict[str, Any], expected: str
) -> None:
    async with in_process_gateway(tracking_config(tmp_path, None), tmp_path) as gw:
        status, _, body = await request(method, gw.url(path), **kwargs)
    assert f"{status}" == expected[:3]
    assert body.decode() == expected


async def test_cookies_set_once_and_session_renewed(tmp_path: Path) -> None:
    async with in_process_gateway(tracking_config(tmp_path, None), tmp_path) as gw:
        _, first, _ = await request("GET", gw.url("/tr/v1"))
        vid, sid = first.cookies["vid"], first.cookies["sid"]
        assert (vid["max-age"], sid["max-age"]) == ("63072000", "1800")
        assert vid["httponly"] and vid["samesite"] == "Lax" and vid["path"] == "/"
        cookies = {"vid": vid.value, "sid": sid.value}
        _, second, _ = await request("GET", gw.url("/tr/v1"), cookies=cookies)
    assert "vid" not in second.cookies  # known visitor: not set again
    assert second.cookies["sid"].value == sid.value  # same session, expiry slid forward


async def test_dnt_means_no_cookie_and_no_ip(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap, honor_dnt=True)
    async with in_process_gateway(config, tmp_path) as gw:
        _, resp, _ = await request("GET", gw.url("/tr/v1/a/b"), headers={"Sec-GPC": "1"})
        assert not resp.cookies
    (event,) = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1))
    assert (event["ip"], event["anonymous_id"], event["session_id"]) == (None, None, None)


async def test_client_ip_from_trusted_proxy_truncated(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap, truncate_ip=True)
    config["server"]["trusted_proxies"] = ["127.0.0.0/8"]
    async with in_process_gateway(config, tmp_path) as gw:
        forwarded = {"X-Forwarded-For": "6.6.6.6, 198.51.100.77"}
        await request("GET", gw.url("/tr/v1"), headers=forwarded)
        # An untrusted-looking chain from a peer we trust still resolves right to left.
        await request("GET", gw.url("/tr/v1"), headers={"X-Forwarded-For": "2001:db8:1:2::9"})
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 2))
    assert sorted(e["ip"] for e in events) == ["198.51.100.0", "2001:db8:1::"]


async def test_tracked_route_emits_request_event_after_response(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        status, _, body = await request("GET", gw.url("/app/page?x=1"), cookies={"vid": VID})
        assert (status, body) == (200, b"hi")
    (record,) = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1)
    event = json.loads(record.value)
    jsonschema.validate(event, SCHEMA)
    assert (event["event_type"], event["status"], event["path"]) == ("request", 200, "/app/page")
    assert event["anonymous_id"] == VID and record.key == VID.encode()
    assert event["duration_ms"] >= 0


async def test_event_topic_per_type(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    pixel_topic = config["kafka"]["topic"] + "-pixel"
    config["kafka"]["topics"] = {"pixel": pixel_topic}
    async with in_process_gateway(config, tmp_path) as gw:
        await request("GET", gw.url("/img/v1"))
        await request("GET", gw.url("/tr/v1"))
    assert values(await consume(kafka_broker.bootstrap, pixel_topic, 1))[0]["event_type"] == "pixel"
    track = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1))
    assert track[0]["event_type"] == "track"


async def test_metrics_count_delivered_events(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        for _ in range(3):
            await request("GET", gw.url("/tr/v1"))
        _, _, text = await request("GET", gw.url("/_gateway/metrics", listener="admin"))
        _, _, ready = await request("GET", gw.url("/_gateway/ready"))
    assert 'gateway_events_total{outcome="accepted",type="track"} 3.0' in text.decode()
    assert 'gateway_events_total{outcome="delivered",type="track"} 3.0' in text.decode()
    assert json.loads(ready)["checks"]["events"] == {"ok": True, "detail": "kafka"}


async def test_queue_full_answers_503_for_ingestion_and_gif_for_pixel(tmp_path: Path) -> None:
    config = tracking_config(tmp_path, None, queue_size=1, delivery="fast")
    async with in_process_gateway(config, tmp_path) as gw:
        assert gw.worker.pipeline is not None
        # Hold the sender back so the queue stays full.
        gw.worker.pipeline._wakeup.clear()
        sender = gw.worker.pipeline._tasks[0]
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        assert (await request("GET", gw.url("/tr/v1")))[0] == 204
        status, resp, body = await request("GET", gw.url("/tr/v1"))
        assert (status, resp.headers["Retry-After"]) == (503, "1")
        assert body == b"503 Service Unavailable: event queue is full\n"
        assert (await request("GET", gw.url("/img/v1")))[2] == PIXEL
        _, _, text = await request("GET", gw.url("/_gateway/metrics", listener="admin"))
    assert 'gateway_events_total{outcome="dropped",type="pixel"} 1.0' in text.decode()


@pytest.mark.parametrize("compression", ["gzip", "lz4", "zstd"])
async def test_compressed_batches_arrive(
    tmp_path: Path, kafka_broker: ApacheKafka, compression: str
) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    config["kafka"]["compression"] = compression
    async with in_process_gateway(config, tmp_path) as gw:
        for i in range(5):
            assert (await request("GET", gw.url(f"/tr/v1/n/{i}")))[0] == 204
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 5))
    assert sorted(e["properties"]["n"] for e in events) == ["0", "1", "2", "3", "4"]


async def test_queue_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    config = tracking_config(tmp_path, None, queue_bytes=4096, delivery="fast")
    async with in_process_gateway(config, tmp_path) as gw:
        assert gw.worker.pipeline is not None
        sender = gw.worker.pipeline._tasks[0]
        sender.cancel()  # hold the queue still
        await asyncio.gather(sender, return_exceptions=True)
        statuses = [(await request("POST", gw.url("/tr/v1"), json={"pad": "x" * 1000}))[0]
                    for _ in range(4)]  # fmt: skip
    assert statuses == [204, 204, 503, 503]


async def test_event_too_large_for_kafka_is_413(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    config["kafka"]["batch_bytes"] = 16384
    async with in_process_gateway(config, tmp_path) as gw:
        status, _, body = await request("POST", gw.url("/tr/v1"), json={"pad": "x" * 20000})
        assert (status, body) == (
            413,
            b"413 Request Entity Too Large: an event is larger than 15360 bytes\n",
        )
        assert (await request("POST", gw.url("/tr/v1"), json={"pad": "x"}))[0] == 204


async def test_fast_tracker_refuses_what_a_full_spool_cannot_keep(tmp_path: Path) -> None:
    config = tracking_config(tmp_path, None, delivery="fast")  # spool only: nothing drains it
    config["spool"]["max_bytes"] = 4096
    async with in_process_gateway(config, tmp_path) as gw:
        answers = [await request("POST", gw.url("/tr/v1"), json={"n": i}) for i in range(20)]
    statuses = [status for status, _, _ in answers]
    kept = len([record for _, record in read_all(tmp_path / "spool")])
    # Every 204 kept, every other answer an explicit refusal (the room a refusal leaves
    # can let a later, smaller event in: not a count of the first ones).
    assert 0 < kept == statuses.count(204) < 20
    for status, resp, body in answers:
        if status != 204:
            assert (status, resp.headers["Retry-After"], body) == (
                503, "1", b"503 Service Unavailable: events cannot be stored right now\n"
            )  # fmt: skip


async def test_records_carry_headers_to_route_by(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        for path in ("/tr/v1/ename/signup", "/img/v1", "/app"):
            assert (await request("GET", gw.url(path)))[0] in (200, 204)
    records = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 3)
    by_type = {json.loads(r.value)["event_type"]: dict(r.headers) for r in records}
    # Each request its own trace, its id in the envelope and in the record's headers.
    trace_ids = {t: headers.pop("trace_id").decode() for t, headers in by_type.items()}
    assert trace_ids == {
        json.loads(r.value)["event_type"]: json.loads(r.value)["trace_id"] for r in records
    }
    assert all(re.fullmatch("[0-9a-f]{32}", t) for t in trace_ids.values())
    assert len(set(trace_ids.values())) == 3
    assert by_type == {
        event_type: {"event_type": event_type.encode(), "schema": b"1",
                     "content-type": b"application/json", "source": source}
        for event_type, source in (("track", b"tracker"), ("pixel", b"pixel"),
                                   ("request", b"request"))
    }  # fmt: skip


async def test_both_eras_of_tracker_urls_are_served(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        classic = await request("POST", gw.url("/tr/v1/ename/a"), json={})
        current = await request("POST", gw.url("/tr/v1/tr/ename/b"), json={})
        with_id = await request("POST", gw.url("/tr/v1/str/ename/c"), json={})
        pixel = await request("GET", gw.url("/tr/v1/img/ename/d"))
        assert [classic[0], current[0], with_id[0], pixel[0]] == [204, 204, 200, 200]
        assert pixel[2] == PIXEL
        assert set(json.loads(with_id[2])) == {"event_id"}
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 4))
    names = {(e["event_type"], e["event_name"], e["path"]) for e in events}
    assert names == {
        ("track", "a", "/tr/v1/ename/a"), ("track", "b", "/tr/v1/tr/ename/b"),
        ("track", "c", "/tr/v1/str/ename/c"), ("pixel", "d", "/tr/v1/img/ename/d"),
    }  # fmt: skip


async def test_client_ids_are_identity_and_malformed_ones_are_not(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    sid, uid = "0193a5b8-7c1d-7e2f-8a3b-000000000001", "0193a5b8-7c1d-7e2f-8a3b-000000000002"
    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        own = await request("POST", gw.url(f"/tr/v1/tr/vid/{VID}"), json={"sid": sid, "uid": uid})
        server = await request("POST", gw.url("/str/v1"), json={"uid": uid})
        bad = await request("POST", gw.url("/tr/v1/vid/not-a-uuid"), json={"ename": "bad"})
        assert own[0] == 204 and not own[1].cookies  # the client named itself
        assert server[0] == 200 and not server[1].cookies  # server-side: never a cookie
        assert bad[0] == 204 and "vid" in bad[1].cookies  # not an id: a cookie visitor
    records = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 3)
    by_path = {json.loads(r.value)["path"]: (r, json.loads(r.value)) for r in records}
    record, event = by_path[f"/tr/v1/tr/vid/{VID}"]
    assert (event["anonymous_id"], event["session_id"], event["user_id"]) == (VID, sid, uid)
    assert record.key == VID.encode()
    record, event = by_path["/str/v1"]
    assert (event["anonymous_id"], event["user_id"], record.key) == (None, uid, uid.encode())
    record, event = by_path["/tr/v1/vid/not-a-uuid"]
    assert event["properties"]["vid"] == "not-a-uuid"  # kept as sent, not an identity
    assert event["anonymous_id"] == bad[1].cookies["vid"].value


async def test_ping_and_a_visitors_forget_me_link(tmp_path: Path) -> None:
    config = tracking_config(tmp_path, None)
    async with in_process_gateway(config, tmp_path) as gw:
        pings = [await request("GET", gw.url(path)) for path in ("/ping", "/tr/v1/ping")]
        status, resp, body = await request("GET", gw.url("/tr/v1/clear"))
    assert [(s, b) for s, _, b in pings] == [(200, b"pong"), (200, b"pong")]
    assert (status, body) == (204, b"")
    assert resp.headers["Clear-Site-Data"] == '"cookies", "storage"'
    assert resp.headers.getall("Set-Cookie") == [
        "vid=; Max-Age=0; Path=/; SameSite=Lax; HttpOnly",
        "sid=; Max-Age=0; Path=/; SameSite=Lax; HttpOnly",
    ]


async def test_current_era_redirects_follow_only_safe_targets(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    from urllib.parse import quote

    from gateway.links.safety import sign

    config = tracking_config(tmp_path, kafka_broker.bootstrap)
    config["redirects"] = {"allowed_hosts": ["shop.example"], "signing_keys": ["k" * 32],
                           "topic": f"links-{config['kafka']['topic']}"}  # fmt: skip
    signed = "https://partner.example/offer"
    async with in_process_gateway(config, tmp_path) as gw:
        allowed = await request(
            "GET",
            gw.url("/tr/v1/rdr/ename/promo?u=" + quote("https://shop.example/sale")),
            allow_redirects=False,
        )
        signed_ok = await request(
            "GET",
            gw.url(f"/tr/v1/rdr?u={quote(signed)}&sig={sign('k' * 32, signed)}"),
            allow_redirects=False,
        )
        refused = await request(
            "GET", gw.url("/tr/v1/rdr?u=" + quote("https://evil.example/")), allow_redirects=False
        )
    assert (allowed[0], allowed[1].headers["Location"]) == (302, "https://shop.example/sale")
    assert allowed[1].headers["Cache-Control"] == "no-store"
    assert (signed_ok[0], signed_ok[1].headers["Location"]) == (302, signed)
    assert refused[0] == 400
    assert refused[2].endswith(b"target is neither signed nor on the allow-list\n")
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 3))
    by_target = {e["properties"]["target"]: e for e in events}
    promo = by_target["https://shop.example/sale"]
    assert (promo["event_type"], promo["event_name"], promo["properties"]["flagged"]) == (
        "redirect", "promo", False
    )  # fmt: skip
    evil = by_target["https://evil.example/"]
    assert evil["properties"]["flagged"] is True
    assert evil["properties"]["reason"] == "target is neither signed nor on the allow-list"
