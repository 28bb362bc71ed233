"""What the HTTP/1.1 shell settles about a request head before the request path sees it.

aiohttp parses the head; these rules make what it parsed mean one thing everywhere
(routing, the proxy's Host and ``X-Forwarded-Host``, static paths, events):

- an absolute-form target (``GET http://a.example/x``) names the authority itself: it
  replaces ``Host`` and the target becomes origin-form (RFC 9112 §3.2.2), so a client
  cannot route by one authority and reach an upstream with another;
- a request line without a version (HTTP/0.9) is refused with ``505``, answered as
  HTTP/1.1 and followed by a close (RFC 9112 §2.3: only 1.x is spoken here);
- a transfer coding other than ``chunked`` is refused with ``501`` (RFC 9112 §6.1): the
  gateway would have to decode it to relay the body, and silently dropping it would
  hand the upstream a body other than the one sent;
- a header line (name, ``: ``, value) or request line longer than
  ``server.limits.max_header_bytes`` is ``431`` or ``414``: aiohttp's parser measures
  names and values, not the line.
"""

from __future__ import annotations

from aiohttp import HttpVersion10, HttpVersion11
from aiohttp.http_parser import RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.request.info import Refusal
from gateway.request.wellformed import line_refusal


def settle(message: RawRequestMessage, max_line: int) -> tuple[RawRequestMessage, Refusal | None]:
    """The message the request path sees, and a refusal if it must not see it at all."""
    # Every request passes these tests: about 1 µs in all, half of it the header lines.
    refusal = None
    if message.version < HttpVersion10:
        message = message._replace(version=HttpVersion11)  # the answer's status line
        refusal = Refusal(505, "HTTP/0.9 is not supported")
    elif message.chunked and _codings(message.headers) != ["chunked"]:
        refusal = Refusal(501, "transfer codings other than chunked are not supported")
    else:
        refusal = line_refusal(message.method, message.path, message.raw_headers, max_line)
    if refusal is not None:
        return message._replace(should_close=True), refusal
    if message.path[:1] != "/" and message.url.absolute:
        message = origin_form(message)
    return message, None


def _codings(headers: CIMultiDictProxy[str]) -> list[str]:
    return [
        coding.strip().lower()
        for line in headers.getall("Transfer-Encoding", ())
        for coding in line.split(",")
        if coding.strip()
    ]


def origin_form(message: RawRequestMessage) -> RawRequestMessage:
    """An absolute-form request as origin-form with the target's authority as ``Host``."""
    url = message.url
    authority = url.raw_host or ""
    if ":" in authority:  # an IPv6 literal, bracketed again (RFC 3986 §3.2.2)
        authority = f"[{authority}]"
    if url.explicit_port:
        authority = f"{authority}:{url.port}"
    target = url.raw_path or "/"
    if url.raw_query_string:
        target = f"{target}?{url.raw_query_string}"
    headers = CIMultiDict(message.headers)
    headers.popall("Host", None)
    headers["Host"] = authority
    raw_headers = (
        *((name, value) for name, value in message.raw_headers if name.lower() != b"host"),
        (b"Host", authority.encode()),
    )
    return message._replace(
        path=target,
        url=URL(target, encoded=True),
        headers=CIMultiDictProxy(headers),
        raw_headers=raw_headers,
    )
