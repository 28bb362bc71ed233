"""The ``segment`` handler: Segment's HTTP Tracking API at the route's path prefix.

With ``path_prefix`` ``/v1``: ``POST /v1/{track,identify,page,screen,group,alias,batch}``
(and ``/v1/t``, ``i``, ``p``, ``s``, ``g``, ``a``), so the official Segment libraries
pointed at the gateway deliver unmodified. The write key comes as the HTTP Basic user
(empty password) or ``writeKey`` in the body. Errors answer Segment's way,
``{"code": ..., "message": ...}``; refused input is kept on the dead-letter topic with
the reason.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from gateway.events.envelope import dead_letter
from gateway.events.segment import CALLS, MAX_BATCH, SHORT, Invalid, batch_calls, validate
from gateway.events.segment_settings import settings
from gateway.events.sink import RETRY_AFTER, EventsRefused, Sink
from gateway.events.tracker import Tracker
from gateway.handlers import read_body
from gateway.request.auth import basic_user
from gateway.request.errors import REQUEST_ID_HEADER, HTTPError
from gateway.request.info import INFO

RETRY = {"Retry-After": RETRY_AFTER}


class SegmentError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class SegmentHandler:
    """Validates Segment calls and turns each into an event."""

    def __init__(
        self,
        prefix: str,
        tracker: Tracker,
        sink: Sink,
        *,
        durable: bool,
        integrations: Mapping[str, Any] | None = None,
    ) -> None:
        # The route's prefix is the API root, e.g. "/v1": calls are the segment below it.
        self._base = prefix.rstrip("/") + "/"
        self._settings_prefix = self._base + "projects/"  # + <writeKey>/settings
        self._integrations = integrations or {}
        self._tracker = tracker
        self._sink = sink
        self._durable = durable
        self._keys = tuple(key.encode() for key in tracker.config.write_keys)

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        path = request.path
        if path.startswith(self._settings_prefix) and path.endswith("/settings"):
            key = path.removeprefix(self._settings_prefix).removesuffix("/settings")
            return self._settings(request, key)
        call = SHORT.get(path[len(self._base) :], path[len(self._base) :])
        if not path.startswith(self._base) or (call not in CALLS and call != "batch"):
            raise HTTPError(404, "no such Segment endpoint")
        cors = self._tracker.cors
        if request.method == "OPTIONS":
            return cors.preflight(request)
        try:
            response = await self._handle(request, call)
        except SegmentError as exc:
            response = web.Response(
                status=exc.status,
                body=orjson.dumps({"code": exc.code, "message": exc.message}),
                content_type="application/json",
                headers={REQUEST_ID_HEADER: request[INFO].request_id, **exc.headers},
            )
        cors.decorate(request, response)
        return response

    def _settings(self, request: web.BaseRequest, write_key: str) -> web.StreamResponse:
        """analytics.js's settings for a known write key, pointing it back at this route
        as the browser reached it."""
        cors = self._tracker.cors
        if request.method == "OPTIONS":
            return cors.preflight(request)
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, "use GET", {"Allow": "GET, HEAD"})
        if not any(hmac.compare_digest(write_key.encode(), known) for known in self._keys):
            raise HTTPError(404, "no such write key")
        api_host = request.host + self._base.rstrip("/")
        body = settings(write_key, api_host, request.scheme, self._integrations)
        response = web.Response(
            body=orjson.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": "public, max-age=60"},
        )
        cors.decorate(request, response)
        return response

    async def _handle(self, request: web.BaseRequest, call: str) -> web.StreamResponse:
        if request.method != "POST":
            raise SegmentError(405, "method_not_allowed", "use POST")
        received_at = time.time()
        try:
            body = await read_body(request, MAX_BATCH)
        except HTTPError as exc:
            if exc.status != 413:
                raise  # a stalled body: 408 like every other handler
            raise SegmentError(400, "too_large", "request is larger than 500 KB") from None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            # Only a caller with a valid key (in the header: the body is unreadable) gets
            # its refused input kept: strangers must not be able to fill the dead letters.
            self._authorize(request, None)
            self._dead_letter(request, "invalid_json", "body is not valid JSON", body, received_at)
            raise SegmentError(400, "invalid_json", "body is not valid JSON") from None
        self._authorize(request, parsed)
        try:
            if call == "batch":
                calls, sent_at = batch_calls(parsed)
            else:
                calls, sent_at = [(parsed, call)], None
            messages = []
            for i, (msg, kind) in enumerate(calls):
                try:
                    messages.append(
                        validate(
                            msg,
                            kind,
                            received_at=received_at,
                            batch_sent_at=sent_at,
                            body_size=len(body),
                        )
                    )
                except Invalid as exc:
                    raise Invalid(f"batch[{i}]: {exc}" if call == "batch" else str(exc)) from None
        except Invalid as exc:
            self._dead_letter(request, "invalid_request", str(exc), body, received_at)
            raise SegmentError(400, "invalid_request", str(exc)) from None
        client_ip = request[INFO].client_ip
        tracker = self._tracker
        facts = tracker.segment_facts(request, client_ip)  # one request: the same for all
        events = [
            tracker.segment_event(request, client_ip, m, received_at, facts) for m in messages
        ]
        await self._submit(events)
        return web.Response(body=b'{"success":true}', content_type="application/json")

    def _authorize(self, request: web.BaseRequest, parsed: Any) -> None:
        key = basic_user(request.headers.get("Authorization"))
        if key is None and isinstance(parsed, dict) and isinstance(parsed.get("writeKey"), str):
            key = parsed["writeKey"]
        if not key:
            raise SegmentError(401, "unauthorized", "a write key is required")
        # Compare against every key, in constant time, so timing says nothing about them.
        matches = [hmac.compare_digest(key.encode(), known) for known in self._keys]
        if not any(matches):
            raise SegmentError(401, "unauthorized", "unknown write key")

    async def _submit(self, events: list[Any]) -> None:
        try:
            await self._sink.put(events, durable=self._durable)
        except EventsRefused as exc:
            if exc.kind == "too_large":
                raise SegmentError(400, "too_large", exc.reason) from None
            message = (
                "event queue is full; retry later"
                if exc.kind == "overloaded"
                else ("events cannot be stored right now")
            )
            raise SegmentError(503, exc.kind, message, exc.headers) from None

    def _dead_letter(
        self, request: web.BaseRequest, code: str, reason: str, body: bytes, at: float
    ) -> None:
        event = dead_letter(
            reason, code=code, path=request.path, ip=request[INFO].client_ip, body=body,
            received_at=at, source="segment",
        )  # fmt: skip
        self._sink.offer(event)  # a loss is counted by the pipeline
