"""The ``snowplow`` handler: Snowplow's tracker protocol, as its collector speaks it.

Below the route's prefix: ``GET /i``, ``/ice.png`` and ``/{vendor}/{version}`` carry one
event in the query string and answer a 1x1 GIF (``no-store``) whatever happens to it;
``POST /com.snowplowanalytics.snowplow/tp2`` carries a self-describing ``payload_data``
and answers ``200 ok`` (all or nothing, durable when the route is). Custom vendor paths
stand for either (``snowplow.paths``). The collector's network user id lives in a
first-party cookie (``sp``); ``SP-Anonymous: *`` sets none and keeps no IP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import orjson
from aiohttp import web

from gateway.config import SNOWPLOW_TP2, Snowplow
from gateway.events.envelope import dead_letter, uuid7
from gateway.events.sink import Sink
from gateway.events.snowplow import Invalid, SnowplowEvent, parse, payload_items
from gateway.events.tracker import Identity, Tracker, cookie_parts
from gateway.handlers import read_body
from gateway.handlers.collect import PIXEL, PIXEL_HEADERS
from gateway.request.errors import HTTPError
from gateway.request.info import INFO

_ID = re.compile(r"[A-Za-z0-9-]{1,64}")  # a network user id worth reading back: a UUID
_PIXEL_PATHS = ("/i", "/ice.png")
_OK = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}


class SnowplowHandler:
    """Takes Snowplow tracker calls below ``prefix``."""

    def __init__(
        self, config: Snowplow, prefix: str, tracker: Tracker, sink: Sink, *, durable: bool
    ) -> None:
        self._base = prefix.rstrip("/")
        self._paths: Mapping[str, str] = {self._base + p: t for p, t in config.paths.items()}
        self._tracker = tracker
        self._sink = sink
        self._durable = durable
        self._max_events = config.max_events
        self._cookie = config.cookie.name
        self._cookie_name, self._cookie_attrs = cookie_parts(tracker.config.cookies, config.cookie)
        self._expired_attrs = re.sub(r"Max-Age=\d+", "Max-Age=0", self._cookie_attrs)

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        path = request.path
        target = self._paths.get(path) or path[len(self._base) :]
        # /{vendor}/{version}: the pixel form of any vendor's protocol, and tp2's POST.
        vendor_form = target.count("/") == 2 and target.rindex("/") > 1
        if target not in _PIXEL_PATHS and not vendor_form:
            raise HTTPError(404, "no such Snowplow endpoint")
        cors = self._tracker.cors
        if request.method == "OPTIONS":
            return cors.preflight(request)
        if request.method == "POST" and target == SNOWPLOW_TP2:
            response = await self._post(request, max_body)
        elif request.method in ("GET", "HEAD"):
            response = self._pixel(request)
        else:
            allow = "GET, HEAD, POST" if target == SNOWPLOW_TP2 else "GET, HEAD"
            raise HTTPError(405, f"use {allow.replace(', HEAD', '')}", {"Allow": allow})
        cors.decorate(request, response)
        return response

    def _dnt(self, request: web.BaseRequest) -> bool:
        headers = request.headers
        return self._tracker.config.honor_dnt and (
            headers.get("DNT") == "1" or headers.get("Sec-GPC") == "1"
        )

    def _identity(self, request: web.BaseRequest, dnt: bool) -> Identity:
        """The network user id: ``nuid`` in the query, else our cookie, else a new one;
        none at all for ``SP-Anonymous`` or (honoured) DNT/GPC, and then no IP either."""
        headers = request.headers
        if dnt or "SP-Anonymous" in headers:
            return Identity(None, None, new_visitor=False, private=True)
        nuid = request.query.get("nuid", "")
        if not _ID.fullmatch(nuid):
            jar = request.cookies if "Cookie" in headers else {}
            nuid = jar.get(self._cookie, "")
        if _ID.fullmatch(nuid):
            return Identity(nuid, None, new_visitor=False, private=False)
        return Identity(uuid7(), None, new_visitor=True, private=False)

    def _set_cookie(
        self, request: web.BaseRequest, response: web.StreamResponse, identity: Identity
    ) -> None:
        if not self._tracker.config.cookies.enabled:
            return
        if identity.anonymous_id:
            # Sent on every answer, as the collector does: its expiry slides with each visit.
            response.headers.add(
                "Set-Cookie", self._cookie_name + identity.anonymous_id + self._cookie_attrs
            )
        elif "Cookie" in request.headers and self._cookie in request.cookies:
            # Anonymous now: the id the browser still holds goes (RFC 6265 §5.3, Max-Age=0).
            response.headers.add("Set-Cookie", self._cookie_name + self._expired_attrs)

    def _events(
        self, items: list[dict[str, str]], identity: Identity, at: float, *, dnt: bool
    ) -> list[SnowplowEvent]:
        events = []
        for i, params in enumerate(items):
            try:
                event = parse(params, received_at=at, network_user_id=identity.anonymous_id)
            except Invalid as exc:
                raise Invalid(f"data[{i}]: {exc}" if len(items) > 1 else str(exc)) from None
            if dnt:
                # DNT honoured: no id of any kind leaves the gateway, as for our trackers;
                # SP-Anonymous hides only the collector's own id and the IP.
                event.anonymous_id = event.user_id = event.session_id = None
            events.append(event)
        return events

    def _pixel(self, request: web.BaseRequest) -> web.StreamResponse:
        received_at = time.time()
        dnt = self._dnt(request)
        identity = self._identity(request, dnt)
        try:
            events = self._events([dict(request.query)], identity, received_at, dnt=dnt)
        except Invalid as exc:
            self._dead_letter(request, str(exc), request.query_string.encode(), received_at)
        else:
            facts = self._tracker.facts(request, request[INFO].client_ip, identity)
            self._sink.offer(self._tracker.snowplow_event(facts, events[0], received_at))
        response = web.Response(body=PIXEL, headers=PIXEL_HEADERS)
        self._set_cookie(request, response, identity)
        return response

    async def _post(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        received_at = time.time()
        body = await read_body(request, max_body)  # 413 past the route's limit
        dnt = self._dnt(request)
        identity = self._identity(request, dnt)
        try:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise Invalid("body is not valid JSON") from None
            items = payload_items(parsed)
            if len(items) > self._max_events:
                raise Invalid(f"more than {self._max_events} events in one request")
            events = self._events(items, identity, received_at, dnt=dnt)
        except Invalid as exc:
            self._dead_letter(request, str(exc), body, received_at)
            raise HTTPError(400, str(exc)) from None
        tracker = self._tracker
        facts = tracker.facts(request, request[INFO].client_ip, identity)
        await self._sink.put(
            [tracker.snowplow_event(facts, event, received_at) for event in events],
            durable=self._durable,
        )  # refusals: 413/503
        response = web.Response(body=b"ok", headers=_OK)
        self._set_cookie(request, response, identity)
        return response

    def _dead_letter(self, request: web.BaseRequest, reason: str, body: bytes, at: float) -> None:
        self._sink.offer(dead_letter(
            reason, code="invalid_snowplow", path=request.path, ip=request[INFO].client_ip,
            body=body, received_at=at, source="snowplow",
        ))  # fmt: skip
