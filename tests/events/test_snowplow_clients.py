"""Snowplow's official trackers, unmodified, over GET and POST: snowplow-tracker (PyPI)
and @snowplow/node-tracker (npm). Every event they report sending is in Kafka, mapped
field by field, with every parameter kept as sent."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from snowplow_tracker import (
    Emitter,
    PageView,
    SelfDescribing,
    SelfDescribingJson,
    StructuredEvent,
    Subject,
    Tracker,
)

from gateway.events.envelope import iso_utc
from tests.apache_kafka import ApacheKafka
from tests.events.test_snowplow import snowplow_config
from tests.events_support import consume, values
from tests.support import in_process_gateway

NODE_TRACKER = Path(__file__).parent.parent / "browser" / "send_snowplow.mjs"
CONTEXT = {"schema": "iglu:com.acme/ctx/jsonschema/1-0-0", "data": {"k": "v"}}
SIGNUP = "iglu:com.acme/signup/jsonschema/1-0-0"


def decoded(value: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


def assert_common(sent: dict[str, str], event: dict[str, Any]) -> None:
    """What every Snowplow event maps the same way, whatever its type."""
    # Trackers stamp stm as the request leaves, after reporting the event to us.
    assert {k: v for k, v in event["extra"].items() if k != "stm"} == {
        k: v for k, v in sent.items() if k != "stm"
    }
    assert event["message_id"] == sent["eid"]
    assert (event["user_id"], event["anonymous_id"], event["session_id"]) == (
        sent.get("uid"), sent.get("duid"), sent.get("sid")
    )  # fmt: skip
    context = event["context"]
    assert context["library"] == {"name": "snowplow", "version": sent["tv"],
                                  "namespace": sent["tna"]}  # fmt: skip
    assert (context["app"], context["platform"]) == ({"id": sent["aid"]}, sent["p"])
    if "dtm" in sent:
        assert event["original_timestamp"] == iso_utc(int(sent["dtm"]) / 1000)
    if "ttm" in sent:
        assert event["timestamp"] == iso_utc(int(sent["ttm"]) / 1000)
    if "cx" in sent:
        assert context["entities"] == decoded(sent["cx"])["data"]
    assert event["gateway"]["node"] == "test-node" and event["ip"] == "127.0.0.1"


def assert_events(sent: list[dict[str, str]], events: list[dict[str, Any]], url: str) -> None:
    by_id = {event["message_id"]: event for event in events}
    assert sorted(by_id) == sorted(s["eid"] for s in sent)
    kinds = {}
    for params in sent:
        event = by_id[params["eid"]]
        assert_common(params, event)
        kinds[params["e"]] = (event["event_type"], event["event_name"], event["properties"])
    assert kinds == {
        "pv": ("page", "page_view", {"url": url, "title": "Home é",
                                     "referrer": "https://ref.example/"}),
        "se": ("track", "add", {"category": "shop", "action": "add", "label": "sku-1",
                                "property": "red", "value": 1.5}),
        "ue": ("track", SIGNUP, {"plan": "pro"}),
        "tr": ("transaction", "transaction", {"order_id": "o-1", "total": 10.0,
                                              "currency": "EUR"}),
        "ti": ("transaction_item", "transaction_item", {
            "order_id": "o-1", "sku": "s-1", "price": 5.0, "quantity": 2, "name": "Sock",
            "currency": "EUR"}),
    }  # fmt: skip


def track_with_python(endpoint: str, method: str) -> list[dict[str, str]]:
    """snowplow-tracker as its README shows it; what it reports sending."""
    sent: list[dict[str, str]] = []
    emitter = Emitter(endpoint, method=method, batch_size=5 if method == "post" else 1,
                      on_success=sent.extend)  # type: ignore[arg-type]  # fmt: skip
    subject = Subject().set_user_id("user-42").set_domain_user_id("duid-py")
    subject.set_domain_session_id("sess-1").set_platform("web")
    tracker = Tracker(namespace="py-ns", emitters=emitter, subject=subject, app_id="py-app")
    tracker.track(PageView(page_url="https://shop.example/a b?x=é", page_title="Home é",
                           referrer="https://ref.example/"))  # fmt: skip
    tracker.track(StructuredEvent(category="shop", action="add", label="sku-1", property_="red",
                                  value=1.5, context=[SelfDescribingJson(**CONTEXT)]))  # fmt: skip
    tracker.track(SelfDescribing(SelfDescribingJson(SIGNUP, {"plan": "pro"}),
                                 true_timestamp=1764655200000))  # fmt: skip
    with pytest.warns(DeprecationWarning):
        tracker.track_ecommerce_transaction(
            order_id="o-1", total_value=10, currency="EUR",
            items=[{"sku": "s-1", "price": 5, "quantity": 2, "name": "Sock"}],
        )  # fmt: skip
    tracker.flush()
    # Reported before the wire stringifies them (dtm an int, for one): as sent.
    return [{key: str(value) for key, value in event.items()} for event in sent]


@pytest.mark.parametrize("method", ["get", "post"])
async def test_python_tracker_delivers_every_event_type(
    tmp_path: Path, kafka_broker: ApacheKafka, method: str
) -> None:
    config = snowplow_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        sent = await asyncio.to_thread(track_with_python, gw.url("").rstrip("/"), method)
    assert len(sent) == 5
    topic = config["kafka"]["topic"]
    events = values(await consume(kafka_broker.bootstrap, topic, 5))
    assert {e["path"] for e in events} == {
        "/i" if method == "get" else "/com.snowplowanalytics.snowplow/tp2"
    }
    assert_events(sent, events, "https://shop.example/a b?x=é")


async def node_tracker(endpoint: str, method: str, *flags: str) -> list[dict[str, str]]:
    process = await asyncio.create_subprocess_exec(
        "node", str(NODE_TRACKER), endpoint, method, *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    return [{key: str(value) for key, value in event.items()} for event in events]  # as sent


@pytest.mark.parametrize("method", ["get", "post"])
async def test_node_tracker_delivers_every_event_type(
    tmp_path: Path, kafka_broker: ApacheKafka, method: str
) -> None:
    config = snowplow_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        sent = await node_tracker(gw.url("").rstrip("/"), method)
    assert len(sent) == 5
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 5))
    assert_events(sent, events, "https://shop.example/a b?x=é")
    network_ids = {e["context"]["networkUserId"] for e in events}
    # One id minted per request (a server-side tracker keeps no cookie jar).
    assert len(network_ids) == (5 if method == "get" else 1)


async def test_node_tracker_server_anonymization_keeps_no_ip_and_sets_no_cookie(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = snowplow_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        sent = await node_tracker(gw.url("").rstrip("/"), "post", "anonymous")
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], len(sent)))
    assert {e["ip"] for e in events} == {None}
    assert not any("networkUserId" in e["context"] for e in events)
    assert {e["anonymous_id"] for e in events} == {"duid-node"}  # the tracker's own id stays
