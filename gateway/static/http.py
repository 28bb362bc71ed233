"""HTTP semantics of a static representation: validators, conditionals, ranges, encodings.

RFC 9110 §13.2.2 fixes the order: If-Match, If-Unmodified-Since, If-None-Match,
If-Modified-Since, then Range (with If-Range). aiohttp parses the validator headers;
this module decides.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime

from aiohttp import web

MAX_RANGES = 16  # more parts than this is a denial-of-service shape: answer 200 instead

COMPRESSIBLE = ("text/", "application/json", "application/javascript", "application/xml",
                "image/svg+xml", "application/wasm", "application/manifest+json")  # fmt: skip


PRECONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")


def conditional_status(request: web.BaseRequest, etag: str, mtime: float) -> int | None:
    """304 or 412 when a precondition decides the answer, else None."""
    headers = request.headers
    if not any(name in headers for name in PRECONDITIONS):
        return None  # the common case: nothing to parse
    modified = datetime.fromtimestamp(int(mtime), UTC)
    if_match = request.if_match
    if if_match is not None:
        if not any(tag.value == "*" or (not tag.is_weak and tag.value == etag) for tag in if_match):
            return 412
    elif (since := request.if_unmodified_since) is not None and modified > since:
        return 412
    if_none_match = request.if_none_match
    if if_none_match is not None:
        if any(tag.value in ("*", etag) for tag in if_none_match):
            return 304 if request.method in ("GET", "HEAD") else 412
    elif request.method in ("GET", "HEAD"):
        since = request.if_modified_since
        if since is not None and modified <= since:
            return 304
    return None


def range_applies(request: web.BaseRequest, etag: str, mtime: float) -> bool:
    """Range is honoured for GET only, and with If-Range only while it still matches."""
    if request.method != "GET" or "Range" not in request.headers:
        return False
    if_range = request.headers.get("If-Range")
    if if_range is None:
        return True
    if if_range.startswith('"'):
        return if_range.strip('"') == etag
    when = request.if_range
    return when is not None and datetime.fromtimestamp(int(mtime), UTC) == when


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Inclusive byte ranges clipped to ``size``; None means ignore the header (serve 200);
    an empty list means nothing is satisfiable (416). RFC 9110 §14.1."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        return None
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or len(parts) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for part in parts:
        first, dash, last = part.partition("-")
        if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
            return None
        if first == "":
            if last == "" or int(last) == 0:
                continue  # suffix of zero bytes: unsatisfiable
            start, end = max(0, size - int(last)), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if last and int(last) < start:
                return None
        if start < size and start <= end:
            ranges.append((start, end))
    return ranges


@functools.lru_cache(maxsize=256)  # clients send a handful of distinct values
def accepted_encodings(header: str | None) -> frozenset[str]:
    """Codings the client takes (q > 0), from Accept-Encoding (RFC 9110 §12.5.3)."""
    accepted: set[str] = set()
    for item in (header or "").split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name and q > 0:
            accepted.add(name.strip().lower())
    return frozenset(accepted)


def compressible(content_type: str) -> bool:
    return content_type.startswith(COMPRESSIBLE)


def pick_encoding(available: Sequence[str], accepted: frozenset[str]) -> str | None:
    """The first available coding the client accepts (our preference order wins)."""
    for coding in available:
        if coding in accepted:
            return coding
    return None
