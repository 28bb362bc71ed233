"""Events enriched end to end: a Segment, a Snowplow and a tracker event (and a pixel)
through the gateway to Apache Kafka, with every step on; what is withheld, routed and
blocked; Rill intake's lines untouched."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema

from tests.apache_kafka import ApacheKafka
from tests.client import fetch
from tests.enrich.agents import CHROME_HINTS, CHROME_WINDOWS, GOOGLEBOT, SAFARI_IPHONE
from tests.enrich.test_geo import ASN, CITY
from tests.events.test_intake import USER, post_like_rill, rill_event
from tests.events_support import SCHEMA, consume, tracking_config, values
from tests.support import in_process_gateway, with_routes

KEY = "wk_enrich"
SALT = "a-salt-from-the-environment"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
PAYLOAD = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
ORDER = {"type": "object", "required": ["total"],
         "properties": {"total": {"type": "number", "minimum": 0}}}  # fmt: skip


def digest(value: str) -> str:
    return hmac.new(SALT.encode(), value.encode(), hashlib.sha256).hexdigest()


def enriched_config(tmp_path: Path, bootstrap: str, **enrich: Any) -> dict[str, Any]:
    config = tracking_config(tmp_path, bootstrap, write_keys=[KEY])
    config = with_routes(
        config,
        {"name": "segment", "match": {"path_prefix": "/v1"}, "segment": {}},
        {"name": "snowplow", "match": {"path_prefix": "/sp"}, "snowplow": {}},
        {"name": "intake", "match": {"path_prefix": "/intake"},
         "intake": {"users": [{"username": USER, "password": "s3cret-intake"}]}},
        {"name": "collect", "match": {"path_prefix": "/t"}, "collect": {}},
    )  # fmt: skip
    config["server"]["trusted_proxies"] = ["127.0.0.1/32"]  # X-Forwarded-For names the client
    config["tracking"]["enrich"] = enrich or {
        "device": {}, "bots": {}, "geo": {"city_db": CITY, "asn_db": ASN}, "campaign": {},
        "referrer": {}, "ip": {}, "consent": {"rules": [
            {"category": "Advertising", "action": "drop"}]},
        "pii": {"salt": SALT, "fields": ["user_id", "context.traits.email"]},
        "plans": {"plans": [{"name": "order", "event_name": "Order Completed",
                             "schema": ORDER}]},
    }  # fmt: skip
    return config


def segment_call(event: str, properties: dict[str, Any], **context: Any) -> dict[str, Any]:
    """What analytics.js (analytics-next) posts for a track call on a shop's page."""
    return {
        "type": "track", "event": event, "properties": properties, "userId": "jane",
        "anonymousId": "anon-1", "messageId": f"m-{event}",
        "context": {
            "library": {"name": "analytics.js", "version": "npm:next-1.70.0"},
            "userAgent": CHROME_WINDOWS,
            "page": {"url": "https://shop.example/checkout?utm_source=news&utm_medium=email",
                     "referrer": "https://www.google.com/"},
            "traits": {"email": "jane@example.com"},
            **context,
        },
    }  # fmt: skip


async def post(url: str, body: Any, **headers: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=json.dumps(body), headers=headers) as resp:
            await resp.read()
            return resp.status


async def test_segment_snowplow_and_tracker_events_arrive_enriched(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = enriched_config(tmp_path, kafka_broker.bootstrap)
    browser = {"User-Agent": CHROME_WINDOWS, **CHROME_HINTS}
    async with in_process_gateway(config, tmp_path) as gw:
        assert (
            await post(
                gw.url("/v1/track"),
                segment_call("Order Completed", {"total": -5}),
                **AUTH,
                **browser,
                **{"X-Forwarded-For": "81.2.69.142"},
            )
            == 200
        )
        tp2 = {"schema": PAYLOAD, "data": [{
            "e": "pv", "url": "https://shop.example/?gclid=abc", "refr": "https://t.co/x",
            "p": "web", "tv": "js-4.1.0", "duid": "d-1", "uid": "jane",
        }]}  # fmt: skip
        assert await post(gw.url("/sp/com.snowplowanalytics.snowplow/tp2"), tp2,
                          **{"User-Agent": SAFARI_IPHONE, "X-Forwarded-For": "2001:480:10::1",
                             "Content-Type": "application/json"}) == 200  # fmt: skip
        status, _, _ = await fetch(
            gw.url("/t/tr/v1/ename/signup?url=https%3A%2F%2Fshop.example%2F%3Futm_campaign%3Dlaunch"),
            headers={"User-Agent": CHROME_WINDOWS, "X-Forwarded-For": "89.160.20.112",
                     "Referer": "https://news.ycombinator.com/item?id=1", "Sec-GPC": "1"},
        )  # fmt: skip
        assert status == 204
        status, _, _ = await fetch(
            gw.url("/t/img/v1/ename/open"),
            headers={"User-Agent": GOOGLEBOT, "X-Forwarded-For": "1.128.0.1"},
        )
        assert status == 200
    events = {e["event_name"]: e for e in values(
        await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 4))}  # fmt: skip
    for event in events.values():
        jsonschema.validate(event, SCHEMA)
    segment = events["Order Completed"]
    assert segment["device"] == {
        "browser": "Chrome", "browser_version": "131", "os": "Windows", "os_version": "11",
        "device": None, "brand": None, "model": None, "type": "desktop",
    }  # fmt: skip
    assert segment["bot"] == {"is_bot": False, "name": None, "by": None, "category": None}
    assert (segment["geo"]["city"], segment["geo"]["country"]) == ("London", "GB")
    assert segment["campaign"] == {"source": "news", "medium": "email"}
    assert segment["referrer"] == {"host": "google.com", "medium": "search", "source": "Google"}
    assert segment["consent"] == {"gpc": False, "dnt": False, "denied": []}
    assert segment["violations"] == [{"plan": "order", "path": "/total", "keyword": "minimum",
                                      "message": "-5 is less than the minimum of 0"}]  # fmt: skip
    assert (segment["ip"], segment["user_id"]) == ("81.2.69.0", digest("jane"))
    assert segment["context"]["traits"] == {"email": digest("jane@example.com")}
    assert "jane" not in json.dumps(segment)  # no copy of the raw values anywhere

    page = events["page_view"]
    assert (page["device"]["browser"], page["device"]["type"]) == ("Mobile Safari", "mobile")
    assert (page["geo"]["city"], page["ip"]) == ("San Diego", "2001:480:10::")
    assert page["campaign"] == {"click_id": "abc", "network": "Google"}
    assert page["referrer"] == {"host": "t.co", "medium": "social", "source": "X"}
    assert (page["user_id"], page["extra"]["uid"]) == (digest("jane"), digest("jane"))
    assert "violations" not in page  # no plan names it, and unplanned events are allowed

    signup = events["signup"]
    assert (signup["geo"]["city"], signup["geo"]["asn"]) == ("Linköping", 29518)
    assert signup["campaign"] == {"name": "launch"}
    assert signup["referrer"]["source"] == "Hacker News"
    assert signup["consent"] == {"gpc": True, "dnt": False, "denied": []}  # recorded only

    pixel = events["open"]
    assert pixel["bot"] == {"is_bot": True, "name": "Googlebot\\/", "by": "list",
                            "category": "search-engine"}  # fmt: skip
    assert (pixel["geo"]["as_org"], pixel["ip"]) == ("Telstra Pty Ltd", "1.128.0.0")


async def test_withheld_routed_and_blocked_events_go_where_the_config_says(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = enriched_config(
        tmp_path, kafka_broker.bootstrap,
        bots={"action": "drop", "topic": "bots-" + tmp_path.name[-8:]},
        consent={"rules": [{"category": "Advertising", "action": "drop"}]},
        plans={"plans": [{"name": "order", "event_name": "Order Completed", "schema": ORDER,
                          "mode": "block"}]},
        sources={"segment": {"bots": "route"}},
    )  # fmt: skip
    topic, bots_topic = config["kafka"]["topic"], config["tracking"]["enrich"]["bots"]["topic"]
    url = None
    async with in_process_gateway(config, tmp_path) as gw:
        url = gw.url("/v1/track")
        crawler = {**AUTH, "User-Agent": GOOGLEBOT}
        assert await post(url, segment_call("Crawled", {}, userAgent=GOOGLEBOT), **crawler) == 200
        denied = {"consent": {"categoryPreferences": {"Advertising": False}}}
        assert await post(url, segment_call("Ad Shown", {}, **denied), **AUTH) == 200
        assert await post(url, segment_call("Order Completed", {"total": -1}), **AUTH) == 200
        assert await post(url, segment_call("Order Completed", {"total": 3}), **AUTH) == 200
        assert (await fetch(gw.url("/t/img/v1/ename/crawl"), headers={"User-Agent": GOOGLEBOT}))[
            0] == 200  # fmt: skip
        metrics = (await fetch(gw.url("/_gateway/metrics", listener="admin")))[2].decode()
    kept = values(await kafka_broker.records(topic))
    assert [(e["event_name"], e["properties"]) for e in kept] == [("Order Completed", {"total": 3})]
    (routed,) = values(await kafka_broker.records(bots_topic))
    assert (routed["event_name"], routed["bot"]["name"]) == ("Crawled", "Googlebot\\/")
    (blocked,) = values(await kafka_broker.records(config["kafka"]["dead_letter_topic"]))
    assert (blocked["event_name"], blocked["violations"][0]["keyword"]) == (
        "Order Completed", "minimum",
    )  # fmt: skip
    assert 'gateway_events_total{outcome="withheld",type="track"} 1.0' in metrics  # consent
    assert 'gateway_events_total{outcome="withheld",type="pixel"} 1.0' in metrics  # the bot
    assert 'gateway_enrich_bots_total{action="route",source="segment"} 1.0' in metrics
    assert 'gateway_enrich_bots_total{action="drop",source="pixel"} 1.0' in metrics
    assert 'gateway_enrich_consent_drops_total{category="Advertising"} 1.0' in metrics
    assert 'gateway_enrich_plan_violations_total{mode="block",plan="order"} 1.0' in metrics


async def test_intake_lines_stay_byte_for_byte_and_only_its_ip_header_is_masked(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = enriched_config(tmp_path, kafka_broker.bootstrap)
    line = rill_event(1, "metric", user_id="jane", value=3.5)
    async with in_process_gateway(config, tmp_path) as gw:
        status, _, _ = await post_like_rill(
            gw.url("/intake"), line + b"\n", password="s3cret-intake",
            **{"X-Forwarded-For": "81.2.69.142"},
        )  # fmt: skip
    assert status == 204
    (record,) = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1)
    assert record.value == line
    assert dict(record.headers)["client_ip"] == b"81.2.69.0"
