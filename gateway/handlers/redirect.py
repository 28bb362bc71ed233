"""The ``redirect`` handler: short links from memory, and signed ad-hoc redirects.

``<prefix>/<slug>`` answers the link's status (302 by default) with its Location, or
404 (unknown or disabled, counted) or 410 (expired). ``<prefix>/r?u=<url>&sig=<hmac>``
redirects only to a URL signed with a current key or whose host is allowed; anything
else is 400 and still recorded, flagged. Every click becomes a ``redirect`` event; the
answer never waits for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.config import Redirects
from gateway.events.sink import Sink
from gateway.events.tracker import Tracker
from gateway.links.model import SLUG, Link
from gateway.links.safety import target_refusal
from gateway.links.store import LinkStore
from gateway.request.errors import HTTPError
from gateway.request.info import INFO

LOCATION_CACHE = 65536  # links whose Location is remembered; cleared whole when full


class RedirectHandler:
    """Resolves ``<prefix>/<slug>`` and ``<prefix>/r`` for one route."""

    def __init__(
        self,
        config: Redirects,
        prefix: str,
        adhoc: bool,
        store: Callable[[], LinkStore | None],
        static_links: Mapping[str, Link],
        tracker: Tracker,
        sink: Sink,
        count_miss: Callable[[], None],
    ) -> None:
        self._config = config
        self._base = prefix.rstrip("/") + "/"
        self._adhoc = adhoc
        self._store = store
        self._static = static_links
        self._tracker = tracker
        self._sink = sink
        self._count_miss = count_miss
        self._locations: dict[str, tuple[Link, str]] = {}

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, "use GET or HEAD", {"Allow": "GET, HEAD"})
        slug = request.path[len(self._base) :] if request.path.startswith(self._base) else ""
        if slug == "r" and self._adhoc:
            return self._adhoc_redirect(request)
        store = self._store()
        if store is None:  # the worker's link store has not loaded yet
            raise HTTPError(503, "links are loading", {"Retry-After": "1"})
        link = self._static.get(slug) or store.links.get(slug)
        if link is None or not link.enabled or not SLUG.match(slug):
            self._count_miss()
            raise HTTPError(404, "no such link")
        if link.expires_at is not None and link.expired(datetime.now(UTC)):
            raise HTTPError(410, "this link has expired")
        query = request.raw_path.partition("?")[2]
        if link.pass_query and query:
            location = link.location(query)
        else:
            # Without the visitor's query a link always sends the same Location: built
            # once per link object (a changed link is a new object), not per click.
            cached = self._locations.get(slug)
            if cached is not None and cached[0] is link:
                location = cached[1]
            else:
                location = link.location("")
                if len(self._locations) >= LOCATION_CACHE:  # deleted links' entries go too
                    self._locations.clear()
                self._locations[slug] = (link, location)
        self._record(request, slug, {
            "slug": slug, "target": link.target, "location": location,
            **link.campaign, "flagged": False,
        })  # fmt: skip
        return self._answer(link.status, location)

    def _adhoc_redirect(self, request: web.BaseRequest) -> web.StreamResponse:
        url = request.query.get("u", "")
        config = self._config
        reason = target_refusal(
            url, request.query.get("sig", ""), signing_keys=config.signing_keys,
            allowed_hosts=config.allowed_hosts, allow_ip=config.allow_ip_literals,
        )  # fmt: skip
        self._record(request, "r", {
            "slug": "r", "target": url[:2048], "flagged": reason is not None,
            **({"reason": reason} if reason else {}),
        })  # fmt: skip
        if reason is not None:
            raise HTTPError(400, reason)
        return self._answer(302, url)

    def _answer(self, status: int, location: str) -> web.Response:
        # no-store: every click must reach us, not a cache.
        return web.Response(
            status=status, headers={"Location": location, "Cache-Control": "no-store"}
        )

    def _record(self, request: web.BaseRequest, name: str, properties: dict[str, Any]) -> None:
        tracker = self._tracker
        event = tracker.event(
            request, request[INFO].client_ip, tracker.identify(request, mint=False),
            event_type="redirect", event_name=name, properties=properties,
        )  # fmt: skip
        self._sink.offer(event)  # the redirect never fails for the event
