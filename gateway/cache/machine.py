"""A cached proxy route's request, as Varnish's states: LOOKUP, then HIT (fresh, or stale
where allowed), STALE (served while one refresh runs), VALIDATE (a conditional request
upstream), MISS (fetched, streamed to the client while stored) or PASS (never stored),
and DELIVER. The RFC 9111 decisions are :mod:`gateway.cache.rules`'; the upstream is
the proxy handler's own pooled client, retries and breakers included."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.cache import rules
from gateway.cache.conditional import respond
from gateway.cache.entry import Entry
from gateway.cache.fill import Filled, build_entry, refresh_entry
from gateway.cache.key import KeySpec, Variant
from gateway.cache.service import CacheService
from gateway.cache.status import HEADER, Status, age_header
from gateway.config import RouteCache
from gateway.request.errors import HTTPError

if TYPE_CHECKING:
    from gateway.proxy.answer import Answer
    from gateway.proxy.answer import Upstream as ProxyHandler

# Conditional and range fields of the client, never sent upstream on a fill: the cache
# wants the whole answer, and answers the client's conditions itself.
CLIENT_CONDITIONS = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since",
                     "If-Range", "Range")  # fmt: skip


class State(enum.Enum):
    FRESH = "fresh"  # served as it is
    STALE = "stale"  # served stale: the request allows it (max-stale)
    REFRESH = "refresh"  # served stale while one background refresh runs (RFC 5861)
    VALIDATE = "validate"  # asked of the upstream first


def directives(headers: CIMultiDictProxy[str]) -> dict[str, str | None]:
    """The request's Cache-Control, or ``Pragma: no-cache`` without one (§5.4)."""
    lines = headers.getall("Cache-Control", ())
    if lines:
        return dict(rules.cache_control(rules.fields(lines)))
    if "no-cache" in headers.get("Pragma", "").lower():
        return {"no-cache": None}
    return {}


def decide(entry: Entry, now: float, request: dict[str, str | None]) -> State:
    """What may be done with a stored answer for this request (§4.2, §4.2.4, RFC 5861)."""
    if entry.invalid or entry.no_cache or "no-cache" in request:
        return State.VALIDATE
    staleness = entry.staleness(now)
    max_age = rules.delta_seconds(request.get("max-age"))
    if max_age is not None and entry.age(now) > max_age:
        return State.VALIDATE
    min_fresh = rules.delta_seconds(request.get("min-fresh"))
    if min_fresh is not None and staleness + min_fresh > 0:
        return State.VALIDATE
    if staleness < 0:
        return State.FRESH
    if entry.revalidate:
        return State.VALIDATE
    if "max-stale" in request:
        allowed = rules.delta_seconds(request["max-stale"])
        if (allowed is None and request["max-stale"] is None) or (
            allowed is not None and staleness <= allowed
        ):
            return State.STALE
    if staleness <= entry.swr:
        return State.REFRESH
    return State.VALIDATE


class CacheMachine:
    """One cached route, over the worker's :class:`CacheService`."""

    def __init__(self, route: str, config: RouteCache, service: CacheService) -> None:
        self.route = route
        self.config = config
        self.service = service
        self.spec = KeySpec(route, config.key)
        service.specs[route] = self.spec
        self.policy = rules.Policy(
            heuristic=config.heuristic,
            heuristic_max=config.heuristic_max,
            default_ttl=config.default_ttl,
            store_set_cookie=config.store_set_cookie,
        )
        self._count = service.metrics.observe_cache
        self._refreshing: set[tuple[str, Variant]] = set()

    async def handle(
        self, request: web.BaseRequest, max_body: int, proxy: ProxyHandler
    ) -> web.StreamResponse:
        try:
            if request.method not in ("GET", "HEAD"):
                return await self._pass(request, max_body, proxy)
            return await self._lookup(request, max_body, proxy)
        except HTTPError as error:
            if HEADER in error.headers:
                raise
            member = Status(fwd="miss", detail="upstream-error").member(self.config.name)
            raise HTTPError(error.status, error.detail, {**error.headers, HEADER: member}) from None

    # --- LOOKUP ---

    async def _lookup(
        self, request: web.BaseRequest, max_body: int, proxy: ProxyHandler
    ) -> web.StreamResponse:
        headers = request.headers
        path, _, query = request.raw_path.partition("?")
        key = self.spec.key(request.scheme, request.host, path, query, headers)
        entry = self.service.cached(key, headers)  # the memory tier: no await on a hit
        if entry is None and self.shared and self.service.shared is not None:
            entry = await self.service.lookup_shared(key, headers)
        if entry is not None and "Authorization" in headers and not entry.auth_ok:
            entry = None  # an answer stored for anyone is not what an authenticated user asked
        now = self.clock()
        # Hot path: a plain request for a fresh entry asks nothing of Cache-Control.
        asked = directives(headers) if _asks(headers) else _NOTHING
        if entry is not None:
            state = decide(entry, now, asked)
            if state is State.FRESH:
                return self._deliver(request, entry, now, None, "hit")
            if state is State.STALE:
                status = Status(hit=True, detail="max-stale")
                return self._deliver(request, entry, now, status, "stale")
            if state is State.REFRESH:
                self._refresh_later(request, max_body, proxy, key, entry)
                status = Status(hit=True, detail="stale-while-revalidate")
                return self._deliver(request, entry, now, status, "stale")
        elif "only-if-cached" in asked:
            self._count(self.route, "miss")
            member = Status(fwd="miss", detail="only-if-cached").member(self.config.name)
            raise HTTPError(504, "not in the cache (only-if-cached)", {HEADER: member})
        return await self._fetch(request, max_body, proxy, key, entry, asked)

    @property
    def shared(self) -> bool:
        return self.config.shared

    def clock(self) -> float:
        """Wall time (ages are of Date headers), the service's so tests can move it."""
        return self.service.clock()

    # --- MISS and VALIDATE: one upstream request per key at a time ---

    async def _fetch(
        self,
        request: web.BaseRequest,
        max_body: int,
        proxy: ProxyHandler,
        key: str,
        entry: Entry | None,
        asked: dict[str, str | None],
    ) -> web.StreamResponse:
        collapser = self.service.collapser
        if collapser.uncacheable(key):
            return await self._pass(request, max_body, proxy, detail="uncacheable")
        if self.config.collapse and request.method == "GET" and (fill := collapser.busy(key)):
            if await collapser.wait(fill, self.config.collapse_timeout):
                found = await self.service.lookup(key, request.headers, self.shared)
                now = self.clock()
                if found is not None and decide(found, now, asked) is State.FRESH:
                    status = Status(hit=True, collapsed=True)
                    return self._deliver(request, found, now, status, "collapsed")
            return await self._pass(request, max_body, proxy, detail="collapse-timeout")
        fill = collapser.start(key) if request.method == "GET" else None
        stored = False
        try:
            response, stored = await self._upstream(request, max_body, proxy, key, entry)
            return response
        finally:
            if fill is not None:
                collapser.end(key, fill, stored)

    async def _upstream(
        self,
        request: web.BaseRequest,
        max_body: int,
        proxy: ProxyHandler,
        key: str,
        entry: Entry | None,
    ) -> tuple[web.StreamResponse, bool]:
        validating = entry is not None and (entry.etag or entry.last_modified)

        def adjust(fields: CIMultiDict[str]) -> None:
            for name in CLIENT_CONDITIONS:
                fields.popall(name, None)
            if validating and entry is not None:
                if entry.etag:
                    fields["If-None-Match"] = entry.etag
                if entry.last_modified:
                    fields["If-Modified-Since"] = entry.last_modified

        request_time = self.clock()
        try:
            answer = await proxy.fetch(request, max_body, adjust)
        except HTTPError:
            if entry is not None and self._may_serve_stale(entry):
                status = Status(fwd="stale", detail="stale-if-error")
                return self._deliver(request, entry, self.clock(), status, "stale_error"), False
            raise
        if entry is not None and answer.status == 304 and validating and self._same(entry, answer):
            answer.hold.succeeded()
            answer.hold.release(True)
            fresh = refresh_entry(entry, answer, self.policy, (request_time, self.clock()))
            self.service.store(fresh, self.shared)
            status = Status(fwd="stale", fwd_status=304, ttl=_ttl(fresh, self.clock()))
            return self._deliver(request, fresh, self.clock(), status, "revalidated"), True
        if entry is not None and answer.status >= 500 and self._may_serve_stale(entry):
            answer.hold.release(False)
            status = Status(fwd="stale", fwd_status=answer.status, detail="stale-if-error")
            return self._deliver(request, entry, self.clock(), status, "stale_error"), False
        times = (request_time, self.clock())
        return await self._store_and_relay(request, proxy, key, entry, answer, times)

    async def _store_and_relay(
        self,
        request: web.BaseRequest,
        proxy: ProxyHandler,
        key: str,
        entry: Entry | None,
        answer: Answer,
        times: tuple[float, float],
    ) -> tuple[web.StreamResponse, bool]:
        fwd = "stale" if entry is not None else "uri-miss"
        if entry is None and self.service.memory.vary(key) is not None:
            fwd = "vary-miss"  # answers for this key are held, none for this variant
        filled = Filled(self.spec, request, answer, self.policy, self.config, self.route, times)
        if filled.refusal is not None or request.method == "HEAD":
            detail = filled.refusal or "head"
            if filled.refusal is not None and filled.refusal != "request-no-store":
                self.service.collapser.mark_uncacheable(key, self.config.uncacheable_ttl)
                if entry is not None:
                    self.service.forget(entry, self.shared)  # the older answer no longer holds
            self._count(self.route, "miss")
            status = Status(fwd=fwd, fwd_status=answer.status, detail=detail)
            return await proxy.relay(request, answer, extra=self._fields(answer, status)), False
        self._count(self.route, "miss")
        if answer.whole is not None:
            answer.hold.succeeded()
            answer.hold.release(True)
            stored = build_entry(filled, answer.whole)
            self.service.store(stored, self.shared)
            self.service.metrics.cache_stored.labels(self.route).inc()
            now = self.clock()
            status = Status(fwd=fwd, fwd_status=answer.status, stored=True, ttl=_ttl(stored, now))
            if any(name in request.headers for name in CLIENT_CONDITIONS):
                return self._deliver(request, stored, now, status, None, age=False), True
            # The one who asked gets the answer whole (fields private="..." names too).
            whole = proxy.whole(answer.status, answer.headers, answer.whole)
            whole.headers.add(HEADER, status.member(self.config.name))
            return whole, True
        # Stored if it ends within the limit: said only where its length says it will.
        known = answer.headers.get("Content-Length", "").isdigit()
        status = Status(fwd=fwd, fwd_status=answer.status, stored=known)
        response = await proxy.relay(request, answer, filled, self._fields(answer, status))
        if filled.complete is not None:
            self.service.store(build_entry(filled, filled.complete), self.shared)
            self.service.metrics.cache_stored.labels(self.route).inc()
            return response, True
        return response, False

    # --- STALE: served while one refresh runs ---

    def _refresh_later(
        self, request: web.BaseRequest, max_body: int, proxy: ProxyHandler, key: str, entry: Entry
    ) -> None:
        slot = (key, entry.variant)
        if slot in self._refreshing:
            return
        self._refreshing.add(slot)
        self.service.spawn(self._refresh(request, max_body, proxy, key, entry, slot))

    async def _refresh(
        self,
        request: web.BaseRequest,
        max_body: int,
        proxy: ProxyHandler,
        key: str,
        entry: Entry,
        slot: tuple[str, Variant],
    ) -> None:
        try:
            await self._upstream_quietly(request, max_body, proxy, key, entry)
        finally:
            self._refreshing.discard(slot)

    async def _upstream_quietly(
        self, request: web.BaseRequest, max_body: int, proxy: ProxyHandler, key: str, entry: Entry
    ) -> None:
        """A background refresh: the answer goes to the store, not to a client."""
        try:
            response, _ = await self._upstream(request, max_body, proxy, key, entry)
        except HTTPError:
            return  # the stale answer stays until its window ends
        del response  # built for no one: what it stored is what counts

    # --- PASS ---

    async def _pass(
        self, request: web.BaseRequest, max_body: int, proxy: ProxyHandler, detail: str = "method"
    ) -> web.StreamResponse:
        self._count(self.route, "pass")
        answer = await proxy.fetch(request, max_body)
        if rules.invalidated(request.method, answer.status):
            self.service.invalidate(
                rules.invalidated_uris(request.host, request.raw_path, answer.headers)
            )
        status = Status(fwd="bypass", fwd_status=answer.status, detail=detail)
        return await proxy.relay(request, answer, extra=self._fields(answer, status))

    # --- DELIVER ---

    def _deliver(
        self,
        request: web.BaseRequest,
        entry: Entry,
        now: float,
        status: Status | None,
        counted: str | None,
        *,
        age: bool = True,
    ) -> web.Response:
        """An answer from ``entry``: ``status`` None is a plain hit (the hot path)."""
        if counted is not None:
            self._count(self.route, counted)
        ttl = int(-entry.staleness(now))
        if status is None:
            member = f"{self.config.name}; hit; ttl={ttl}"
        else:
            if status.ttl is None:
                status = Status(status.hit, status.fwd, status.fwd_status, status.stored,
                                ttl, status.collapsed, status.detail)  # fmt: skip
            member = status.member(self.config.name)
        fields = CIMultiDict(entry.fields)
        if age:
            fields["Age"] = age_header(entry.age(now))
        if HEADER in fields:
            member = ", ".join([*fields.getall(HEADER), member])  # RFC 9211 §2: ours last
        fields[HEADER] = member
        return respond(entry, request.method, request.headers, fields, member)

    def _fields(self, answer: Answer, status: Status) -> tuple[tuple[str, str], ...]:
        return ((HEADER, status.member(self.config.name)),)

    def _may_serve_stale(self, entry: Entry) -> bool:
        """RFC 5861 stale-if-error, or the route's grace, unless the answer forbids
        serving it stale (must-revalidate, proxy-revalidate, s-maxage, no-cache)."""
        if entry.revalidate:
            return False
        return entry.staleness(self.clock()) <= max(entry.sie, self.config.grace)

    @staticmethod
    def _same(entry: Entry, answer: Answer) -> bool:
        """§4.3.4: a 304 with a strong validator must name the stored one."""
        etag = answer.headers.get("ETag")
        return etag is None or etag.startswith("W/") or etag == entry.etag


_NOTHING: dict[str, str | None] = {}


def _asks(headers: CIMultiDictProxy[str]) -> bool:
    """Whether the request says anything about caching (most do not)."""
    return "Cache-Control" in headers or "Pragma" in headers


def _ttl(entry: Entry, now: float) -> int:
    return int(-entry.staleness(now))
