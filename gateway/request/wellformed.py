"""What a well-formed request head is, whichever protocol carried it.

HTTP/1.1 heads go through aiohttp's parser (llhttp), which refuses what breaks RFC 9112's
grammar before the gateway sees it. HTTP/2 and HTTP/3 hand over fields one by one, already
split, so a ``:method`` of ``GET /internal`` or a value holding a control byte would reach
an upstream's request line intact: their shells call :func:`head_refusal` before routing,
and an upstream only ever sees a request an HTTP/1.1 client could have sent
(RFC 9113 §8.2.1 and §8.3.1, RFC 9114 §4.2 and §4.3.1). The line limits here are checked
for every shell by the request factory they share (``gateway.http.head.settle``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.http_parser import HttpRequestParser

from gateway.request.info import Refusal

# RFC 9110 §5.6.2 tchar; HTTP/2 and HTTP/3 field names are lowercase (RFC 9113 §8.2.1).
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
# RFC 9110 §5.5: visible ASCII, SP, HTAB and obs-text; NUL, CR, LF, other controls and
# DEL are refused, as llhttp refuses them in an HTTP/1.1 head.
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
# RFC 9112 §3.2.1 origin-form as llhttp takes it: "/" then visible ASCII only.
_ORIGIN_FORM = re.compile(r"/[\x21-\x7e]*")
# RFC 9113 §8.3.1: host and optional port, no userinfo.
_AUTHORITY = re.compile(rb"[A-Za-z0-9._~!$&'()*+,;=%-]+(:[0-9]*)?|\[[0-9A-Fa-f:.]+\](:[0-9]*)?")
_WHITESPACE = (0x20, 0x09)

# Methods aiohttp's HTTP/1.1 parser took, learnt once each: it knows a fixed list (GET,
# PURGE, PROPFIND, ...) and refuses the rest, lowercase ones too. Bounded by that list.
_KNOWN_METHODS: set[str] = set()


def method_refusal(method: str) -> Refusal | None:
    """Refuse a method an HTTP/1.1 client could not have sent through aiohttp's parser."""
    if method in _KNOWN_METHODS:
        return None
    if method == "CONNECT":
        return Refusal(405, "CONNECT is not supported")
    if _NAME.fullmatch(method.encode("latin-1", "replace").lower()) and _parses(method):
        _KNOWN_METHODS.add(method)
        return None
    return Refusal(400, "invalid method")


def _parses(method: str) -> bool:
    parser = HttpRequestParser(None, asyncio.get_running_loop(), 1 << 16)
    try:
        parser.feed_data(method.encode("ascii") + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
    except (BadHttpMessage, UnicodeEncodeError):
        return False
    return True


def target_refusal(method: str, target: str) -> Refusal | None:
    """``:path`` must be origin-form, or ``*`` for OPTIONS (RFC 9113 §8.3.1)."""
    if _ORIGIN_FORM.fullmatch(target) or (target == "*" and method == "OPTIONS"):
        return None
    return Refusal(400, "the :path must be an origin-form target (/path?query)")


def authority_refusal(authority: bytes) -> Refusal | None:
    if _AUTHORITY.fullmatch(authority):
        return None
    return Refusal(400, "invalid :authority")


def field_refusal(name: bytes, value: bytes) -> Refusal | None:
    """A field name must be a lowercase token; a value holds no control byte but HTAB
    and neither starts nor ends with whitespace (RFC 9113 §8.2.1)."""
    if not _NAME.fullmatch(name):
        return Refusal(400, "invalid header field name")
    if not _VALUE.fullmatch(value) or (
        value and (value[0] in _WHITESPACE or value[-1] in _WHITESPACE)
    ):
        return Refusal(400, f"invalid value in header field {name.decode('ascii')}")
    return None


def line_refusal(
    method: str, target: str, fields: Sequence[tuple[bytes, bytes]], max_line: int
) -> Refusal | None:
    """A request line (``M T HTTP/1.1``) or a header line (name, ``: ``, value) longer than
    ``max_line``: 414 or 431, as the line would be in HTTP/1.1."""
    if len(method) + len(target) + 10 > max_line:
        return Refusal(414, f"request line is longer than {max_line} bytes")
    if any(len(name) + len(value) + 2 > max_line for name, value in fields):
        return Refusal(431, f"a header line is longer than {max_line} bytes")
    return None


def head_refusal(
    method: str,
    target: str,
    authority: bytes | None,
    fields: Sequence[tuple[bytes, bytes]],
    *,
    max_fields: int,
) -> Refusal | None:
    """The rules above but the line limits, for a head that arrived as separate fields
    (HTTP/2, HTTP/3)."""
    if len(fields) > max_fields:
        return Refusal(431, f"more than {max_fields} header fields")
    refusal = (
        method_refusal(method)
        or target_refusal(method, target)
        or (authority_refusal(authority) if authority is not None else None)
    )
    if refusal is not None:
        return refusal
    for name, value in fields:
        if refusal := field_refusal(name, value):
            return refusal
    return None


def declared_length(fields: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The request's ``content-length`` (the shells' codecs refuse a malformed one)."""
    for name, value in fields:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def length_refusal(declared: int | None, received: int, *, ended: bool) -> Refusal | None:
    """A body that disagrees with its ``content-length``: more than it says, or a stream
    ended short of it, is malformed (RFC 9113 §8.1.1) and never forwarded."""
    if declared is None:
        return None
    if received > declared or (ended and received != declared):
        return Refusal(400, f"content-length is {declared} but the body has {received} bytes")
    return None
