"""A stored answer as a client's conditional or range request would have it: 304 for a
validator it already holds (RFC 9110 §13.1.2, §13.1.3), 206 for one range of a complete
200 (§14), 416 for a range it does not have."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.cache.entry import Entry
from gateway.cache.rules import http_date
from gateway.cache.status import HEADER
from gateway.request.response import UNTYPED
from gateway.static.http import parse_ranges

# RFC 9110 §15.4.5: what a 304 carries of the answer it stands for.
NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)


def _tags(value: str) -> list[str]:
    return [tag.strip().removeprefix("W/") for tag in value.split(",") if tag.strip()]


def not_modified(entry: Entry, headers: CIMultiDictProxy[str]) -> bool:
    """Whether the client already holds this representation: If-None-Match (weak
    comparison, any member) decides; else If-Modified-Since against Last-Modified (or
    Date). Only for 200 answers, as a conditional GET's 304 stands for one."""
    if entry.status != 200:
        return False
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if entry.etag is None:
            return False
        tags = _tags(if_none_match)
        return "*" in tags or entry.etag.removeprefix("W/") in tags
    since = http_date(headers.get("If-Modified-Since"))
    if since is None:
        return False
    fields = {name.lower(): value for name, value in entry.fields}
    modified = http_date(entry.last_modified) or http_date(fields.get("date"))
    return modified is not None and modified <= since


def not_modified_fields(entry: Entry) -> list[tuple[str, str]]:
    return [(n, v) for n, v in entry.fields if n.lower() in NOT_MODIFIED_FIELDS]


def byte_range(entry: Entry, headers: CIMultiDictProxy[str]) -> tuple[int, int] | bool | None:
    """The one range a GET asked of a complete 200: ``(start, end)`` inclusive; None to
    answer whole (no Range, several ranges, a Range or If-Range that does not apply);
    False when nothing asked for is there (416)."""
    header = headers.get("Range")
    if header is None or entry.status != 200:
        return None
    if_range = headers.get("If-Range")
    if if_range is not None:
        if if_range.startswith(("W/", '"')):
            if entry.etag is None or entry.etag.startswith("W/") or if_range != entry.etag:
                return None  # strong comparison (§13.1.5)
        elif http_date(if_range) is None or if_range != entry.last_modified:
            return None
    ranges = parse_ranges(header, len(entry.body))
    if ranges is None or len(ranges) > 1:
        return None  # multipart is not made from the cache: the whole answer is
    if not ranges:
        return False
    return ranges[0]


def respond(
    entry: Entry,
    method: str,
    headers: CIMultiDictProxy[str],
    fields: CIMultiDict[str],
    status_member: str,
) -> web.Response:
    """The answer ``entry`` gives this request, with ``fields`` (the stored ones, Age
    and Cache-Status set): 304, 206 or 416 where the request asks for it, else whole."""
    status_code, body = entry.status, entry.body
    if (
        "If-None-Match" not in headers
        and "If-Modified-Since" not in headers
        and ("Range" not in headers)
    ):
        pass  # the common case: nothing to compare
    elif not_modified(entry, headers):
        response = web.Response(status=304, headers=CIMultiDict(not_modified_fields(entry)))
        response.headers[HEADER] = status_member
        return response
    elif method == "GET":
        part = byte_range(entry, headers)
        if part is False:
            fields["Content-Range"] = f"bytes */{len(body)}"
            return web.Response(status=416, headers=fields)
        if part is not None and part is not True:
            start, end = part
            fields["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            status_code, body = 206, body[start : end + 1]
    response = web.Response(status=status_code, headers=fields, body=body)
    if "Content-Type" not in fields:
        response[UNTYPED] = True
    return response
