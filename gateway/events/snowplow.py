"""Snowplow's tracker protocol: one event's parameters in, envelope fields out.

Pure functions, as :mod:`gateway.events.segment` is for Segment: a tracker's parameters
(the query string of ``GET /i``, or one item of a ``tp2`` POST's ``data``) become a
:class:`SnowplowEvent`, or :class:`Invalid` with the reason the client is told.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.events.envelope import MAX_TIMESTAMP, MIN_TIMESTAMP, SegmentFields, iso_utc

# Iglu schema URIs without their version (any 1-x-y is taken).
PAYLOAD_DATA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-"
CONTEXTS = "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-"
UNSTRUCT_EVENT = "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-"

# The tracker protocol's ``e`` to the envelope's event_type.
TYPES = {
    "pv": "page", "pp": "page_ping", "se": "track", "ue": "track",
    "tr": "transaction", "ti": "transaction_item",
}  # fmt: skip
# Each type's properties: (property, parameter, kind, required).
_TEXT, _INT, _NUMBER = "text", "int", "number"
_PAGE = (("url", "url", _TEXT, False), ("title", "page", _TEXT, False),
         ("referrer", "refr", _TEXT, False))  # fmt: skip
PROPERTIES: dict[str, tuple[tuple[str, str, str, bool], ...]] = {
    "pv": _PAGE,
    "pp": (
        *_PAGE,
        ("min_x", "pp_mix", _INT, False), ("max_x", "pp_max", _INT, False),
        ("min_y", "pp_miy", _INT, False), ("max_y", "pp_may", _INT, False),
    ),
    "se": (
        ("category", "se_ca", _TEXT, True), ("action", "se_ac", _TEXT, True),
        ("label", "se_la", _TEXT, False), ("property", "se_pr", _TEXT, False),
        ("value", "se_va", _NUMBER, False),
    ),
    "ue": (),
    "tr": (
        ("order_id", "tr_id", _TEXT, True), ("affiliation", "tr_af", _TEXT, False),
        ("total", "tr_tt", _NUMBER, True), ("tax", "tr_tx", _NUMBER, False),
        ("shipping", "tr_sh", _NUMBER, False), ("city", "tr_ci", _TEXT, False),
        ("state", "tr_st", _TEXT, False), ("country", "tr_co", _TEXT, False),
        ("currency", "tr_cu", _TEXT, False),
    ),
    "ti": (
        ("order_id", "ti_id", _TEXT, True), ("sku", "ti_sk", _TEXT, True),
        ("name", "ti_nm", _TEXT, False), ("category", "ti_ca", _TEXT, False),
        ("price", "ti_pr", _NUMBER, True), ("quantity", "ti_qu", _INT, True),
        ("currency", "ti_cu", _TEXT, False),
    ),
}  # fmt: skip
# Tracker facts that go to the envelope's context, Segment's names where it has one.
_CONTEXT = (
    ("userAgent", "ua"), ("locale", "lang"), ("timezone", "tz"), ("platform", "p"),
    ("sessionIndex", "vid"),
)  # fmt: skip
_SCREEN = (
    ("resolution", "res"), ("viewport", "vp"), ("documentSize", "ds"),
    ("colorDepth", "cd"), ("charset", "cs"),
)  # fmt: skip


_URLSAFE = bytes.maketrans(b"-_", b"+/")


class Invalid(Exception):
    """An event Snowplow's protocol does not allow; ``str()`` is the reason."""


@dataclass(slots=True)  # not frozen: built per event (see envelope.RequestFacts)
class SnowplowEvent:
    event_type: str
    event_name: str
    anonymous_id: str | None
    user_id: str | None
    session_id: str | None
    properties: dict[str, Any]
    fields: SegmentFields


def payload_items(body: Any) -> list[dict[str, str]]:
    """The events of a ``tp2`` POST: a self-describing ``payload_data`` whose ``data`` is
    a list of parameter objects."""
    if not isinstance(body, dict) or not str(body.get("schema", "")).startswith(PAYLOAD_DATA):
        raise Invalid(f"body must be a self-describing JSON with schema {PAYLOAD_DATA}*")
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise Invalid("data must be a non-empty array of events")
    items = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise Invalid(f"data[{i}]: must be an object")
        for key, value in item.items():
            if not isinstance(value, str):
                raise Invalid(f"data[{i}].{key}: must be a string")
        items.append(item)
    return items


def _json_param(params: Mapping[str, str], plain: str, encoded: str) -> Any:
    """A JSON parameter sent plain (``co``, ``ue_pr``) or base64url (``cx``, ``ue_px``)."""
    if plain in params:
        name, text = plain, params[plain].encode()
    elif encoded in params:
        name = encoded
        raw = params[encoded].encode()
        try:
            # RFC 4648 §5's alphabet (the standard one is taken too); trackers drop the
            # padding, so it is put back. Anything else in the text is refused.
            text = base64.b64decode(raw.translate(_URLSAFE) + b"=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(f"{name}: not base64url") from None
    else:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Invalid(f"{name}: not valid JSON") from None


def _self_describing(value: Any, name: str, schema: str) -> Any:
    if not isinstance(value, dict) or not str(value.get("schema", "")).startswith(schema):
        raise Invalid(f"{name}: must be self-describing JSON with schema {schema}*")
    return value.get("data")


def _millis(params: Mapping[str, str], key: str) -> float | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    try:
        seconds = int(value) / 1000
    except ValueError:
        seconds = MAX_TIMESTAMP  # refused below, as out of range
    if not MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP:  # what iso_utc can write
        raise Invalid(f"{key}: not a Unix time in milliseconds")
    return seconds


def _value(params: Mapping[str, str], key: str, kind: str) -> Any:
    text = params[key]
    if kind == _TEXT:
        return text
    try:
        number = int(text) if kind == _INT else float(text)
    except ValueError:
        raise Invalid(f"{key}: not {'an integer' if kind == _INT else 'a number'}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise Invalid(f"{key}: not a finite number")
    return number


def parse(
    params: Mapping[str, str], *, received_at: float, network_user_id: str | None
) -> SnowplowEvent:
    """One tracker event. ``network_user_id``: the collector's own id of the browser (the
    ``sp`` cookie or ``nuid``), None when the request asked for anonymity."""
    e = params.get("e")
    if not e:
        raise Invalid("e (the event type) is required")
    if e not in TYPES:
        raise Invalid(f"e: unknown event type {e!r} (known: {', '.join(TYPES)})")
    properties: dict[str, Any] = {}
    for name, key, kind, required in PROPERTIES[e]:
        if params.get(key, "") != "":
            properties[name] = _value(params, key, kind)
        elif required:
            raise Invalid(f"{key} is required for e={e}")
    event_name = {"pv": "page_view", "pp": "page_ping", "tr": "transaction"}.get(e, "")
    if e == "se":
        event_name = properties["action"]
    elif e == "ti":
        event_name = "transaction_item"
    elif e == "ue":
        unstruct = _json_param(params, "ue_pr", "ue_px")
        if unstruct is None:
            raise Invalid("ue_pr or ue_px is required for e=ue")
        inner = _self_describing(unstruct, "ue", UNSTRUCT_EVENT)
        if not isinstance(inner, dict) or not isinstance(inner.get("schema"), str):
            raise Invalid("ue: data must be a self-describing event with a schema")
        if not isinstance(inner.get("data", {}), dict):
            raise Invalid("ue: the event's data must be an object")
        event_name, properties = inner["schema"], inner.get("data", {})
    context = _context(params, network_user_id)
    created, sent, true = _millis(params, "dtm"), _millis(params, "stm"), _millis(params, "ttm")
    # As Segment does with timestamp and sentAt (Snowplow calls it derived_tstamp):
    # the device's clock is trusted for intervals, not for the time of day.
    if true is not None:
        timestamp = true
    elif created is not None:
        timestamp = created if sent is None else received_at - (sent - created)
    else:
        timestamp = received_at
    try:
        timestamp_text = iso_utc(timestamp)
    except ValueError:
        raise Invalid("dtm corrected by stm is outside the years 1 to 9999") from None
    return SnowplowEvent(
        event_type=TYPES[e],
        event_name=event_name,
        anonymous_id=params.get("duid") or context.get("networkUserId"),
        user_id=params.get("uid") or None,
        session_id=params.get("sid") or None,
        properties=properties,
        fields=SegmentFields(
            context=context,
            sent_at=iso_utc(sent) if sent is not None else None,
            timestamp=timestamp_text,
            original_timestamp=iso_utc(created) if created is not None else None,
            message_id=params.get("eid") or None,
            extra=dict(params),  # every parameter as sent: nothing the tracker said is lost
        ),
    )


def _context(params: Mapping[str, str], network_user_id: str | None) -> dict[str, Any]:
    context: dict[str, Any] = {"library": {"name": "snowplow", "version": params.get("tv", "")}}
    if params.get("tna"):
        context["library"]["namespace"] = params["tna"]
    if params.get("aid"):
        context["app"] = {"id": params["aid"]}
    for name, key in _CONTEXT:
        if params.get(key):
            context[name] = params[key]
    # A server-side tracker names the browser it speaks for (tnuid, or nuid in 4.x);
    # otherwise it is the collector's own id (the cookie).
    network = params.get("tnuid") or params.get("nuid") or network_user_id
    if network:
        context["networkUserId"] = network
    page = {name: params[key] for name, key, _, _ in _PAGE if params.get(key)}
    if page:
        context["page"] = page
    screen = {name: params[key] for name, key in _SCREEN if params.get(key)}
    if screen:
        context["screen"] = screen
    contexts = _json_param(params, "co", "cx")
    if contexts is not None:
        entities = _self_describing(contexts, "co" if "co" in params else "cx", CONTEXTS)
        if not isinstance(entities, list) or not all(
            isinstance(entity, dict) and isinstance(entity.get("schema"), str)
            for entity in entities
        ):
            raise Invalid("contexts: data must be an array of self-describing JSON")
        context["entities"] = entities
    return context
