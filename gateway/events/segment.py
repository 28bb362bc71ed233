"""Segment HTTP Tracking API semantics: validation, limits, timing, as Segment applies them.

Pure functions: a parsed message in, envelope fields out, or :class:`Invalid` with the
reason a client is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.events.envelope import SegmentFields, iso_utc

CALLS = ("track", "identify", "page", "screen", "group", "alias")
# analytics-next posts to the first letter of each call, and its batching to "b".
SHORT = {
    "t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias",
    "b": "batch",
}  # fmt: skip
MAX_MESSAGE = 32 * 1024  # Segment's per-message limit
MAX_BATCH = 500 * 1024  # Segment's per-request limit for /v1/batch
# Top-level members the envelope maps to members of its own; every other one a client
# sends is kept verbatim in ``extra`` (writeKey, a credential, is dropped).
MAPPED = frozenset({
    "type", "userId", "anonymousId", "event", "name", "properties", "traits", "context",
    "groupId", "previousId", "timestamp", "sentAt", "messageId", "integrations", "writeKey",
})  # fmt: skip


class Invalid(Exception):
    """A message or request Segment would refuse; ``str()`` is the reason."""


@dataclass(slots=True)  # not frozen: built per event (see envelope.RequestFacts)
class Message:
    """One validated call, ready to become an event."""

    event_type: str
    event_name: str
    user_id: str | None
    anonymous_id: str | None
    properties: dict[str, Any]
    segment: SegmentFields


def _text(msg: dict[str, Any], key: str) -> str | None:
    value = msg.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # Segment accepts numeric ids and treats them as strings
    if not isinstance(value, str):
        raise Invalid(f"{key} must be a string")
    return value


def _object(msg: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid(f"{key} must be an object")
    return value


def parse_time(value: Any, key: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{key} must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{key} is not an ISO 8601 date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def corrected_timestamp(
    received_at: float, timestamp: datetime | None, sent_at: datetime | None
) -> float:
    """When it happened, on the server's clock: ``receivedAt - (sentAt - timestamp)``.

    A client whose clock is off by an hour sends both ``timestamp`` and ``sentAt`` an hour
    off; the difference between them is real, the offset is not (Segment's rule)."""
    if timestamp is None:
        return received_at
    if sent_at is None:
        return timestamp.timestamp()
    return received_at - (sent_at - timestamp).total_seconds()


def validate(
    msg: Any,
    call: str,
    *,
    received_at: float,
    batch_sent_at: Any = None,
    body_size: int | None = None,
) -> Message:
    """Check one call against Segment's rules and build its envelope fields.
    ``body_size``: the request's size; a message cannot be larger, so a request within
    the per-message limit spares measuring each message."""
    if not isinstance(msg, dict):
        raise Invalid("message must be a JSON object")
    if (body_size is None or body_size > MAX_MESSAGE) and len(orjson.dumps(msg)) > MAX_MESSAGE:
        raise Invalid("message is larger than 32 KB")
    user_id, anonymous_id = _text(msg, "userId"), _text(msg, "anonymousId")
    if call != "alias" and user_id is None and anonymous_id is None:
        raise Invalid("userId or anonymousId is required")
    name = ""
    if call == "track":
        name = _text(msg, "event") or ""
        if not name:
            raise Invalid("event is required for track")
    elif call in ("page", "screen"):
        name = _text(msg, "name") or ""
    group_id = _text(msg, "groupId")
    if call == "group" and group_id is None:
        raise Invalid("groupId is required for group")
    previous_id = _text(msg, "previousId")
    if call == "alias" and (previous_id is None or user_id is None):
        raise Invalid("previousId and userId are required for alias")
    timestamp = parse_time(msg.get("timestamp"), "timestamp")
    sent_raw = msg.get("sentAt", batch_sent_at)
    sent_at = parse_time(sent_raw, "sentAt")
    corrected = None  # the envelope then uses received_at
    if timestamp is not None:
        try:
            corrected = iso_utc(corrected_timestamp(received_at, timestamp, sent_at))
        except ValueError:  # e.g. a timestamp in year 9999 sent at year 1
            raise Invalid("timestamp corrected by sentAt is outside the years 1 to 9999") from None
    return Message(
        event_type=call,
        event_name=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties=_object(msg, "properties") or {},
        segment=SegmentFields(
            traits=_object(msg, "traits"),
            context=_object(msg, "context"),
            group_id=group_id,
            previous_id=previous_id,
            sent_at=sent_raw if sent_at is not None else None,
            timestamp=corrected,
            original_timestamp=msg.get("timestamp") if timestamp is not None else None,
            message_id=_text(msg, "messageId"),
            integrations=_object(msg, "integrations"),
            # Most messages have only mapped members: a subset test in C spares the loop.
            extra=None
            if msg.keys() <= MAPPED
            else {key: value for key, value in msg.items() if key not in MAPPED},
        ),
    )


def batch_calls(body: Any) -> tuple[list[tuple[Any, str]], Any]:
    """The (message, call) pairs of a /v1/batch body, and its batch-level sentAt."""
    if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
        raise Invalid("body must be an object with a batch array")
    calls = []
    for i, msg in enumerate(body["batch"]):
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind not in CALLS:
            raise Invalid(f"batch[{i}]: type must be one of {', '.join(CALLS)}")
        calls.append((msg, kind))
    return calls, body.get("sentAt")
