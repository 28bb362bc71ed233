"""The ``collect`` handler: tracker endpoints under the route's path prefix.

- ``tr/v1/<key>/<value>/...``: an event from path tuplets, the query string and, for
  POST, a JSON object body; answers 204.
- ``str/v1/...``: the same, answering ``{"event_id": ...}``.
- ``img/v1/...``: a pixel; always a transparent 1x1 GIF with ``Cache-Control: no-store``,
  whatever happens to the event (a lost one is counted, never shown).

Values stay exactly as the client sent them. On a ``durable`` route the answer waits
until the event is safe (Kafka acknowledged or spool fsynced); pixels never wait.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from gateway.config import Collect, Redirects
from gateway.events.sink import Sink
from gateway.events.tracker import Tracker, event_name
from gateway.handlers import read_json_object, tracker_ws
from gateway.links.safety import target_refusal
from gateway.request.errors import HTTPError
from gateway.request.info import INFO

# The smallest transparent GIF89a: 1x1, one transparent palette entry.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {"Content-Type": "image/gif", "Cache-Control": "no-store, max-age=0"}


def parse_tuplets(raw_path: str) -> dict[str, str]:
    """``/k1/v1/k2/v2`` (raw, percent-encoded) into a dict; values as sent, decoded."""
    segments = [unquote(s) for s in raw_path.split("?", 1)[0].strip("/").split("/") if s]
    if len(segments) % 2:
        raise HTTPError(400, "path tuplets must come in key/value pairs")
    return dict(zip(segments[::2], segments[1::2], strict=True))


class CollectHandler:
    """Serves the enabled tracker endpoints below ``prefix``."""

    def __init__(
        self,
        config: Collect,
        prefix: str,
        tracker: Tracker,
        sink: Sink,
        durable: bool,
        count_frame: Callable[[str], None] = lambda outcome: None,
        redirects: Redirects | None = None,
    ) -> None:
        base = prefix.rstrip("/")
        # Both eras of the tracker project's URLs: "tr/v1", "str/v1", "img/v1" and the
        # current "tr/v1/tr", "tr/v1/str", "tr/v1/img". Longest first, so "/tr/v1/tr/k/v"
        # is the current era's call, not a classic one with the tuplet key "tr".
        endpoints: dict[str, str] = {
            f"{base}/{name}/v1": name for name in config.endpoints if name != "ws"
        }
        endpoints.update({f"{base}/tr/v1/{name}": name for name in config.endpoints})
        endpoints[f"{base}/tr/v1/rdr"] = "rdr"  # the current era's tracked redirect
        # With the prefixes a request may continue with, built once: this runs per request.
        self._endpoints = [
            (base, (base + "/", base + "?"), name)
            for base, name in sorted(endpoints.items(), key=lambda item: -len(item[0]))
        ]
        # A liveness probe for clients, and a visitor's "forget me" link; both eras' forms.
        self._control = {
            f"{base}{era}/{name}": name for era in ("", "/tr/v1") for name in ("ping", "clear")
        }
        self._tracker = tracker
        self._sink = sink
        self._durable = durable
        self._config = config
        self._count_frame = count_frame
        self._redirects = redirects or Redirects()  # none configured: no target qualifies

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        control = self._control.get(request.path)
        if control is not None:
            return self._answer_control(request, control)
        raw = request.raw_path
        for base, continued, name in self._endpoints:
            if raw == base or raw.startswith(continued):
                rest = raw[len(base) :]
                if request.method == "OPTIONS":
                    return self._tracker.cors.preflight(request)
                if name == "ws":
                    return await self._websocket(request, rest)
                if name == "rdr":
                    return self._redirect(request, rest)
                if name == "img":
                    response = await self._pixel(request, rest)
                else:
                    response = await self._track(request, rest, max_body, with_id=name == "str")
                self._tracker.cors.decorate(request, response)
                return response
        raise HTTPError(404, "no such tracker endpoint")

    async def _websocket(self, request: web.BaseRequest, rest: str) -> web.StreamResponse:
        if rest not in ("", "/") or request.headers.get("Upgrade", "").lower() != "websocket":
            raise HTTPError(400, "tr/v1/ws takes a WebSocket upgrade", {"Upgrade": "websocket"})
        return await tracker_ws.serve(
            request, self._tracker, self._sink,
            max_frame_bytes=self._config.ws_max_frame_bytes,
            frames_per_second=self._config.ws_frames_per_second,
            count=self._count_frame,
        )  # fmt: skip

    def _redirect(self, request: web.BaseRequest, rest: str) -> web.StreamResponse:
        """``tr/v1/rdr/<tuplets>?u=<target>[&sig=...]``: a tracked click, sent on only to
        a target that is signed or allow-listed (``redirects``), as ``/r`` does; any other
        is refused (400) and its event flagged."""
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, "use GET or HEAD", {"Allow": "GET, HEAD"})
        properties = self._from_url(request, rest)
        url = request.query.get("u") or request.query.get("url") or ""
        config = self._redirects
        reason = target_refusal(
            url, request.query.get("sig", ""), signing_keys=config.signing_keys,
            allowed_hosts=config.allowed_hosts, allow_ip=config.allow_ip_literals,
        )  # fmt: skip
        identity = self._tracker.identify(request, properties)
        properties.update({"target": url[:2048], "flagged": reason is not None})
        if reason is not None:
            properties["reason"] = reason
        event = self._tracker.event(
            request, request[INFO].client_ip, identity,
            event_type="redirect", event_name=event_name(properties, "rdr"),
            properties=properties,
        )  # fmt: skip
        self._sink.offer(event)  # the click is answered whatever happens to its event
        if reason is not None:
            raise HTTPError(400, reason)
        response = web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
        self._tracker.set_cookies(response, identity)
        self._tracker.cors.decorate(request, response)
        return response

    def _answer_control(self, request: web.BaseRequest, name: str) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return self._tracker.cors.preflight(request)
        if name == "ping":
            response = web.Response(text="pong", headers={"Cache-Control": "no-store"})
        else:
            # The visitor's data in this browser goes: our cookies expire, and the page's
            # storage is cleared too (Clear-Site-Data, W3C).
            response = web.Response(
                status=204,
                headers={"Clear-Site-Data": '"cookies", "storage"', "Cache-Control": "no-store"},
            )
            self._tracker.expire_cookies(response)
        self._tracker.cors.decorate(request, response)
        return response

    async def _properties(
        self, request: web.BaseRequest, rest: str, max_body: int
    ) -> dict[str, Any]:
        properties = self._from_url(request, rest)
        if request.method == "POST":
            properties.update(await read_json_object(request, max_body))
        elif request.method not in ("GET", "HEAD"):
            raise HTTPError(405, "use GET or POST", {"Allow": "GET, HEAD, POST"})
        return properties

    async def _track(
        self, request: web.BaseRequest, rest: str, max_body: int, *, with_id: bool
    ) -> web.StreamResponse:
        properties = await self._properties(request, rest, max_body)
        # A server-side call ("str") speaks for a visitor elsewhere: no cookie of its own.
        identity = self._tracker.identify(request, properties, mint=not with_id)
        event = self._tracker.event(
            request, request[INFO].client_ip, identity,
            event_type="track", event_name=event_name(properties), properties=properties,
        )  # fmt: skip
        await self._sink.put((event,), durable=self._durable)  # refusals: 413/503
        if with_id:
            response: web.StreamResponse = web.Response(
                body=orjson.dumps({"event_id": event.event_id}), content_type="application/json"
            )
        else:
            response = web.Response(status=204)
            self._tracker.set_cookies(response, identity)
        return response

    @staticmethod
    def _from_url(request: web.BaseRequest, rest: str) -> dict[str, Any]:
        """Path tuplets, then the query string: a key in both takes the query's value."""
        properties: dict[str, Any] = parse_tuplets(rest)
        properties.update(request.query)
        return properties

    async def _pixel(self, request: web.BaseRequest, rest: str) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, "use GET or HEAD", {"Allow": "GET, HEAD"})
        properties: dict[str, Any] | None
        try:
            properties = self._from_url(request, rest)
        except HTTPError:
            properties = None  # a malformed path: no event, the GIF goes out all the same
        identity = self._tracker.identify(request, properties)
        if properties is not None:
            event = self._tracker.event(
                request, request[INFO].client_ip, identity,
                event_type="pixel", event_name=event_name(properties), properties=properties,
            )  # fmt: skip
            self._sink.offer(event)  # a loss is counted by the pipeline
        response = web.Response(body=PIXEL, headers=PIXEL_HEADERS)
        self._tracker.set_cookies(response, identity)
        return response
