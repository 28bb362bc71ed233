"""An upstream answer on its way into the cache: whether it may be stored (decided from
its head, before any byte reaches the client), its body as it streams past (dropped once
it outgrows the route's limit: a large answer is relayed, never buffered whole), and
the entry made of it; and a stored entry refreshed by a 304 (RFC 9111 §4.3.4)."""

from __future__ import annotations

import re
from email.utils import formatdate
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from gateway.cache import rules
from gateway.cache.entry import Entry
from gateway.cache.key import KeySpec, variant
from gateway.config import RouteCache
from gateway.proxy.headers import end_to_end

if TYPE_CHECKING:
    from gateway.proxy.answer import Answer

# Kept from the stored answer when a 304 updates it: the stored body depends on them.
_BODY_FIELDS = frozenset({"content-length", "content-encoding", "content-range"})
_NOT_STORED = frozenset({"age"})  # computed on every delivery
_TAG_SPLIT = re.compile(r"[\s,]+")


class Filled:
    """A miss's answer, judged from its head and collected as it is relayed (the proxy's
    ``Sink``): ``complete`` holds the whole body once it ended within the limit."""

    def __init__(
        self,
        spec: KeySpec,
        request: web.BaseRequest,
        answer: Answer,
        policy: rules.Policy,
        config: RouteCache,
        route: str,
        times: tuple[float, float],
    ) -> None:
        headers = answer.headers
        self.answer = answer
        # When the request went upstream and its answer's head came back (the cache's
        # clock, wall time: entries are shared between processes).
        self.request_time, self.response_time = times
        self.route = route
        self.config = config
        path, _, query = request.raw_path.partition("?")
        self.key = spec.key(request.scheme, request.host, path, query, request.headers)
        self.url = request.host.lower() + path
        self.query = spec.query(query)
        self.directives = rules.cache_control(rules.fields(headers.getall("Cache-Control", [])))
        self.vary = rules.vary_names(headers.getall("Vary", []))
        self.variant = variant(self.vary or (), request.headers)
        self.policy = policy
        self.refusal = rules.refusal(
            request.method,
            answer.status,
            self.directives,
            _request_directives(request),
            authorization="Authorization" in request.headers,
            set_cookie="Set-Cookie" in headers,
            vary=self.vary,
            expires="Expires" in headers,
            validator="ETag" in headers or "Last-Modified" in headers,
            policy=policy,
        )
        declared = headers.get("Content-Length")
        limit = config.max_entry_bytes
        if self.refusal is None and declared and declared.isdigit() and int(declared) > limit:
            self.refusal = "too-large"
        self.complete: bytes | None = None
        self._chunks: list[bytes] | None = []  # None once past max_entry_bytes
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        if self._chunks is None:
            return
        self._size += len(chunk)
        if self._size > self.config.max_entry_bytes:
            self._chunks = None  # outgrown: relayed only
            return
        self._chunks.append(chunk)

    def done(self) -> None:
        if self._chunks is not None:
            self.complete = b"".join(self._chunks)


def _initial_age(answer: Answer, date: float, times: tuple[float, float]) -> float:
    age = rules.age_value(answer.headers.getall("Age", []))
    return rules.initial_age(age, date, *times)


def _request_directives(request: web.BaseRequest) -> dict[str, str | None]:
    lines = request.headers.getall("Cache-Control", ())
    return dict(rules.cache_control(rules.fields(lines))) if lines else {}


def build_entry(filled: Filled, body: bytes) -> Entry:
    """The entry for a storable answer whose whole body is ``body``."""
    answer = filled.answer
    stripped = rules.stripped_fields(filled.directives) | _NOT_STORED
    # str, not multidict's istr: entries are encoded for the Redis tier.
    fields = [
        (str(n), v) for n, v in end_to_end(answer.headers).items() if n.lower() not in stripped
    ]
    date = rules.http_date(answer.headers.get("Date"))
    if date is None:
        # RFC 9110 §6.6.1: a recipient with a clock adds one; stored, never rewritten.
        date = filled.response_time
        fields = [(n, v) for n, v in fields if n.lower() != "date"]
        fields.append(("Date", formatdate(date, usegmt=True)))
    freshness = rules.freshness(
        answer.status, filled.directives, date, answer.headers.get("Expires"),
        answer.headers.get("Last-Modified"), filled.policy,
    )  # fmt: skip
    tag_line = answer.headers.get(filled.config.tag_header, "")
    return Entry(
        key=filled.key,
        route=filled.route,
        url=filled.url,
        query=filled.query,
        vary=filled.vary or (),
        variant=filled.variant,
        status=answer.status,
        fields=tuple(fields),
        body=body,
        request_time=filled.request_time,
        response_time=filled.response_time,
        initial_age=_initial_age(answer, date, (filled.request_time, filled.response_time)),
        lifetime=freshness.lifetime,
        heuristic=freshness.heuristic,
        no_cache=freshness.no_cache,
        revalidate=freshness.revalidate,
        swr=freshness.swr,
        sie=freshness.sie,
        auth_ok=any(d in filled.directives for d in ("public", "s-maxage", "must-revalidate")),
        etag=answer.headers.get("ETag"),
        last_modified=answer.headers.get("Last-Modified"),
        tags=tuple(tag for tag in _TAG_SPLIT.split(tag_line) if tag),
        stored_at=filled.response_time,
    )


def refresh_entry(
    entry: Entry, answer: Answer, policy: rules.Policy, times: tuple[float, float]
) -> Entry:
    """§4.3.4: the 304's fields replace the stored ones of the same names, but those the
    stored body depends on; its Date and Age restart the entry's age."""
    update = end_to_end(answer.headers)
    names = {name.lower() for name in update} - _BODY_FIELDS - _NOT_STORED
    fields = CIMultiDict((n, v) for n, v in entry.fields if n.lower() not in names)
    for name, value in update.items():
        if name.lower() in names:
            fields.add(name, value)
    directives = rules.cache_control(rules.fields(fields.getall("Cache-Control", ())))
    date = rules.http_date(fields.get("Date")) or times[1]
    freshness = rules.freshness(
        entry.status, directives, date, fields.get("Expires"), fields.get("Last-Modified"), policy
    )
    return entry.refreshed(
        freshness,
        fields=tuple((str(name), value) for name, value in fields.items()),
        request_time=times[0],
        response_time=times[1],
        initial_age=_initial_age(answer, date, times),
        etag=fields.get("ETag"),
        last_modified=fields.get("Last-Modified"),
        stored_at=times[1],
    )
