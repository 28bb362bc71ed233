"""Snowplow's tracker protocol mapped to the envelope: pure functions, no sockets."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest

from gateway.events.snowplow import Invalid, parse, payload_items

AT = 1_764_655_200.0  # 2025-12-02T06:00:00Z, the collector's receipt time


@contextmanager
def refused(reason: str, *, prefix: bool = False) -> Iterator[None]:
    """The block raises Invalid saying ``reason`` (or starting with it)."""
    with pytest.raises(Invalid) as caught:
        yield
    said = str(caught.value)
    assert said.startswith(reason) if prefix else said == reason, said


def b64(value: object) -> str:
    """base64url without padding, as the trackers encode cx and ue_px."""
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def test_page_view_maps_page_context_identity_and_keeps_every_parameter() -> None:
    params = {
        "e": "pv", "url": "https://shop.example/a?b=1", "page": "Shop", "refr": "https://ref.example/",
        "tv": "js-4.1.0", "tna": "sp1", "aid": "shop", "p": "web", "eid": "e-1",
        "duid": "d-1", "uid": "u-1", "sid": "s-1", "vid": "3", "lang": "fr-FR",
        "tz": "Europe/Paris",
        "res": "1920x1080", "vp": "1200x800", "ua": "agent/1",
    }  # fmt: skip
    event = parse(params, received_at=AT, network_user_id="n-1")
    assert (event.event_type, event.event_name) == ("page", "page_view")
    assert event.properties == {
        "url": "https://shop.example/a?b=1", "title": "Shop", "referrer": "https://ref.example/",
    }  # fmt: skip
    assert (event.anonymous_id, event.user_id, event.session_id) == ("d-1", "u-1", "s-1")
    assert event.fields.context == {
        "library": {"name": "snowplow", "version": "js-4.1.0", "namespace": "sp1"},
        "app": {"id": "shop"}, "userAgent": "agent/1", "locale": "fr-FR",
        "timezone": "Europe/Paris", "platform": "web", "networkUserId": "n-1",
        "sessionIndex": "3", "page": event.properties,
        "screen": {"resolution": "1920x1080", "viewport": "1200x800"},
    }  # fmt: skip
    assert event.fields.message_id == "e-1"
    assert event.fields.extra == params  # as sent, nothing lost


def test_the_network_id_identifies_when_the_tracker_sends_no_domain_id() -> None:
    event = parse({"e": "pv"}, received_at=AT, network_user_id="n-1")
    assert event.anonymous_id == "n-1"
    assert parse({"e": "pv"}, received_at=AT, network_user_id=None).anonymous_id is None


def test_structured_events_and_typed_values() -> None:
    params = {"e": "se", "se_ca": "shop", "se_ac": "add", "se_la": "sku-1", "se_pr": "red",
              "se_va": "2.5"}  # fmt: skip
    event = parse(params, received_at=AT, network_user_id=None)
    assert (event.event_type, event.event_name) == ("track", "add")
    assert event.properties == {"category": "shop", "action": "add", "label": "sku-1",
                                "property": "red", "value": 2.5}  # fmt: skip
    with refused("se_va: not a number"):
        parse({**params, "se_va": "lots"}, received_at=AT, network_user_id=None)
    with refused("se_ac is required for e=se"):
        parse({"e": "se", "se_ca": "shop"}, received_at=AT, network_user_id=None)


def test_self_describing_events_take_their_schema_as_name_plain_or_base64() -> None:
    inner = {"schema": "iglu:com.acme/signup/jsonschema/1-0-0", "data": {"plan": "pro"}}
    wrapped = {"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
               "data": inner}  # fmt: skip
    for params in ({"e": "ue", "ue_px": b64(wrapped)},
                   {"e": "ue", "ue_pr": orjson.dumps(wrapped).decode()}):  # fmt: skip
        event = parse(params, received_at=AT, network_user_id=None)
        assert (event.event_type, event.event_name) == ("track", inner["schema"])
        assert event.properties == {"plan": "pro"}
    with refused("ue_px: not base64url"):
        parse({"e": "ue", "ue_px": "!!!"}, received_at=AT, network_user_id=None)
    with refused("ue_pr: not valid JSON"):
        parse({"e": "ue", "ue_pr": "{"}, received_at=AT, network_user_id=None)
    with refused("ue: must be self-describing JSON with schema iglu:", prefix=True):
        parse({"e": "ue", "ue_pr": '{"schema": "iglu:x/y/jsonschema/1-0-0", "data": {}}'},
              received_at=AT, network_user_id=None)  # fmt: skip


def test_contexts_are_decoded_into_entities() -> None:
    entity = {"schema": "iglu:com.acme/user/jsonschema/1-0-0", "data": {"tier": "gold"}}
    contexts = {"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1",
                "data": [entity]}  # fmt: skip
    event = parse({"e": "pv", "cx": b64(contexts)}, received_at=AT, network_user_id=None)
    assert event.fields.context is not None and event.fields.context["entities"] == [entity]
    bad = {**contexts, "data": [{"no": "schema"}]}
    with refused("contexts: data must be an array of self-describing", prefix=True):
        parse({"e": "pv", "co": orjson.dumps(bad).decode()}, received_at=AT, network_user_id=None)


def test_transactions_and_items() -> None:
    tr = parse({"e": "tr", "tr_id": "o-1", "tr_tt": "30.5", "tr_cu": "EUR", "tr_co": "FR"},
               received_at=AT, network_user_id=None)  # fmt: skip
    assert (tr.event_type, tr.event_name) == ("transaction", "transaction")
    assert tr.properties == {"order_id": "o-1", "total": 30.5, "country": "FR", "currency": "EUR"}
    ti = parse({"e": "ti", "ti_id": "o-1", "ti_sk": "sku", "ti_pr": "10", "ti_qu": "3"},
               received_at=AT, network_user_id=None)  # fmt: skip
    assert (ti.event_type, ti.event_name) == ("transaction_item", "transaction_item")
    assert ti.properties == {"order_id": "o-1", "sku": "sku", "price": 10.0, "quantity": 3}
    with refused("ti_qu: not an integer"):
        parse({"e": "ti", "ti_id": "o", "ti_sk": "s", "ti_pr": "1", "ti_qu": "2.5"},
              received_at=AT, network_user_id=None)  # fmt: skip


def test_device_clock_skew_is_corrected_as_segment_does_and_true_time_wins() -> None:
    # The device's clock is an hour fast: created 10 s before sending, both an hour off.
    created, sent = (AT + 3600 - 10) * 1000, (AT + 3600) * 1000
    params = {"e": "pv", "dtm": str(int(created)), "stm": str(int(sent))}
    fields = parse(params, received_at=AT, network_user_id=None).fields
    assert fields.timestamp == "2025-12-02T05:59:50.000Z"
    assert fields.original_timestamp == "2025-12-02T06:59:50.000Z"
    assert fields.sent_at == "2025-12-02T07:00:00.000Z"
    true = parse({**params, "ttm": str(int(AT * 1000) - 5000)}, received_at=AT,
                 network_user_id=None).fields  # fmt: skip
    assert true.timestamp == "2025-12-02T05:59:55.000Z"
    assert parse({"e": "pv"}, received_at=AT, network_user_id=None).fields.timestamp == (
        "2025-12-02T06:00:00.000Z"
    )
    with refused("dtm: not a Unix time in milliseconds"):
        parse({"e": "pv", "dtm": "soon"}, received_at=AT, network_user_id=None)


def test_event_type_is_required_and_known() -> None:
    with refused("e (the event type) is required"):
        parse({"url": "x"}, received_at=AT, network_user_id=None)
    with refused("e: unknown event type 'zz'", prefix=True):
        parse({"e": "zz"}, received_at=AT, network_user_id=None)


def test_payload_data_envelope_is_checked() -> None:
    schema = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
    assert payload_items({"schema": schema, "data": [{"e": "pv"}]}) == [{"e": "pv"}]
    with refused("body must be a self-describing JSON with schema", prefix=True):
        payload_items({"schema": "iglu:com.acme/x/jsonschema/1-0-0", "data": []})
    with refused("data must be a non-empty array of events"):
        payload_items({"schema": schema, "data": []})
    with refused("data[1].dtm: must be a string"):
        payload_items({"schema": schema, "data": [{"e": "pv"}, {"e": "pv", "dtm": 5}]})
