"""Rules for every response head, whatever handler or wire protocol produced it:

- HTTP Strict Transport Security (RFC 6797), opt-in per host, on HTTPS answers only
  (§7.2: a plain-HTTP answer must not carry it);
- a relayed answer that had no ``Content-Type`` keeps none: aiohttp would add
  ``application/octet-stream``, which forbids the client's sniffing the upstream chose
  to allow (RFC 9110 §8.3);
- ``Server`` names the product, not the Python and aiohttp versions aiohttp would
  advertise to anyone fingerprinting the edge (an upstream's own is relayed, unless it
  is that very string).

The protocol shell applies them as a head is prepared (streamed answers too).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from gateway.config import Hsts
from gateway.request.router import normalize_host

HEADER = "Strict-Transport-Security"
SERVER = "edge-gateway"
# Set on a response relayed from an upstream that sent no Content-Type.
UNTYPED = web.ResponseKey("gateway.untyped", bool)


class HstsPolicy:
    """Host → header value; exact names and one-label wildcards, like routes."""

    __slots__ = ("_exact", "_parents")

    def __init__(self, entries: tuple[Hsts, ...]) -> None:
        self._exact: dict[str, str] = {}
        self._parents: dict[str, str] = {}
        for entry in entries:
            for host in entry.hosts:
                if host.startswith("*."):
                    self._parents.setdefault(host[2:], entry.header)
                else:
                    self._exact.setdefault(host, entry.header)

    def header_for(self, host: str) -> str | None:
        found = self._exact.get(host)
        if found is None and "." in host:
            found = self._parents.get(host.split(".", 1)[1])
        return found


def finish_head(response: web.StreamResponse, host: str, hsts: HstsPolicy | None) -> None:
    """Apply the rules above to ``response`` for a request to ``host``; ``hsts`` only on
    HTTPS."""
    headers = response.headers
    if headers.get("Server") == SERVER_SOFTWARE:  # aiohttp's default, not relayed
        headers["Server"] = SERVER
    if response.get(UNTYPED):
        headers.popall("Content-Type", None)
    if hsts is not None:
        header = hsts.header_for(normalize_host(host))
        if header is not None:
            headers[HEADER] = header


@runtime_checkable
class Informational(Protocol):
    """A writer of a protocol whose interim answers are frames (HTTP/2, HTTP/3)."""

    async def informational(self, status: int) -> None: ...


async def send_continue(request: web.BaseRequest) -> None:
    """``100 Continue`` before a body is read (RFC 9110 §10.1.1): a status line over
    HTTP/1.1, an interim HEADERS frame where the protocol has them."""
    writer = request.writer
    if isinstance(writer, Informational):
        await writer.informational(100)
    else:
        await writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
