"""The ``intake`` handler: Rill's intake protocol, already-formed events.

Rill's activity sink POSTs newline-delimited JSON with HTTP Basic auth, each line one
event carrying ``event_id``, ``event_time`` (RFC 3339), ``event_type`` and
``event_name`` beside its own attributes. A JSON array of such objects, or one object,
is taken too; gzip is decoded by the server. A request is all or nothing: a bad line
answers 400 naming the line and the field, keeps nothing, and (for an authenticated
caller) goes to the dead-letter topic. Each event's record value is the line exactly as
sent; its key is ``event_id``; its topic follows ``event_type`` through
``kafka.topics``; the gateway's facts go in record headers, not into the client's JSON.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from gateway.config import Intake, Kafka
from gateway.events.envelope import SCHEMA_VERSION, Event, dead_letter, iso_utc
from gateway.events.sink import Sink
from gateway.handlers import read_body
from gateway.request.auth import basic_credentials
from gateway.request.errors import HTTPError
from gateway.request.info import INFO

REQUIRED = ("event_id", "event_time", "event_type", "event_name")
# Go's RFC3339Nano has up to 9 fraction digits; Python's parser takes 6.
_NANOS = re.compile(r"(\.\d{6})\d+")
_REALM = {"WWW-Authenticate": 'Basic realm="intake", charset="UTF-8"'}


class Invalid(Exception):
    """A line Rill's protocol does not allow; ``str()`` says which and why."""


def split_events(body: bytes, max_line: int) -> list[bytes]:
    """The events of a body, each as the bytes the client sent (array items re-encoded:
    an array has no lines of its own), none longer than ``max_line``."""
    text = body.strip()
    if text.startswith(b"["):
        try:
            items = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise Invalid("body is not valid JSON") from None
        lines = [orjson.dumps(item) for item in items]
    else:
        lines = [line for line in body.split(b"\n") if line.strip()]
    for number, line in enumerate(lines, 1):
        if len(line) > max_line:
            raise Invalid(f"line {number}: longer than {max_line} bytes")
    return lines


def check_event(number: int, line: bytes) -> dict[str, Any]:
    """The parsed event of ``line`` (1-based ``number``), or :class:`Invalid`."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise Invalid(f"line {number}: not valid JSON") from None
    if not isinstance(event, dict):
        raise Invalid(f"line {number}: must be a JSON object")
    for field in REQUIRED:
        value = event.get(field)
        if not isinstance(value, str) or not value:
            raise Invalid(f"line {number}: {field} must be a non-empty string")
    try:
        datetime.fromisoformat(_NANOS.sub(r"\1", event["event_time"]).replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"line {number}: event_time is not an RFC 3339 time") from None
    return event


class IntakeHandler:
    """Takes Rill intake POSTs below the route's prefix."""

    def __init__(
        self,
        config: Intake,
        kafka: Kafka | None,
        sink: Sink,
        *,
        durable: bool,
        node: str,
        mask_ip: Callable[[str], str | None] | None = None,
    ) -> None:
        self._users = [(u.username.encode(), u.password.encode()) for u in config.users]
        # tracking.enrich.ip on the client_ip header: the lines themselves stay as sent.
        self._mask_ip = mask_ip
        self._max_line = config.max_line_bytes
        self._kafka = kafka
        self._sink = sink
        self._durable = durable
        self._node = node

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        if request.method != "POST":
            raise HTTPError(405, "use POST", {"Allow": "POST"})
        user = self._authorize(request)
        received_at = time.time()
        body = await read_body(request, max_body)  # 413 past the route's limit
        try:
            lines = split_events(body, self._max_line)
            parsed = [check_event(n, line) for n, line in enumerate(lines, 1)]
        except Invalid as exc:
            self._sink.offer(dead_letter(
                str(exc), code="invalid_intake", path=request.path,
                ip=request[INFO].client_ip, body=body, received_at=received_at,
                source="intake",
            ))  # fmt: skip
            raise HTTPError(400, str(exc)) from None
        client_ip: str | None = request[INFO].client_ip
        if self._mask_ip is not None and client_ip:
            client_ip = self._mask_ip(client_ip)
        facts = [
            ("content-type", b"application/json"),
            ("schema", str(SCHEMA_VERSION).encode()),
            ("source", b"intake"),
            ("received_at", iso_utc(received_at).encode()),
            *([("client_ip", client_ip.encode())] if client_ip is not None else []),
            ("node", self._node.encode()),
            ("user", user.encode()),
        ]
        if (trace := request[INFO].trace) is not None:
            facts.append(("trace_id", trace.trace_id.encode()))
        events = [
            self._event(line, event, facts) for line, event in zip(lines, parsed, strict=True)
        ]
        await self._sink.put(events, durable=self._durable)  # refusals: 413/503
        return web.Response(status=204)

    def _event(self, line: bytes, event: dict[str, Any], facts: list[tuple[str, bytes]]) -> Event:
        client_type = event["event_type"]
        kafka = self._kafka
        topic = kafka.topics.get(client_type, kafka.topic) if kafka is not None else "events"
        headers = [("event_type", client_type.encode()), *facts]
        # "intake" as the gateway's own type: metrics labels and caches stay bounded
        # whatever types clients make up; the topic and headers carry theirs.
        return Event(
            event["event_id"], "intake", event["event_id"].encode(), line,
            keyed=False, source="intake", topic=topic, headers=headers,
        )  # fmt: skip

    def _authorize(self, request: web.BaseRequest) -> str:
        credentials = basic_credentials(request.headers.get("Authorization"))
        if credentials is None:
            raise HTTPError(401, "HTTP Basic credentials are required", _REALM)
        username, password = (part.encode() for part in credentials)
        # Every user compared, in constant time: timing tells nothing about which exist.
        matches = [
            hmac.compare_digest(username, known_user) & hmac.compare_digest(password, known)
            for known_user, known in self._users
        ]
        if not any(matches):
            raise HTTPError(401, "unknown user or wrong password", _REALM)
        return credentials[0]
