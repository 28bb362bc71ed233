"""Header rewriting between client and upstream (RFC 9110 §7.6).

Hop-by-hop fields belong to one connection and are never forwarded: the fixed list of
RFC 9110 §7.6.1 plus every name the ``Connection`` field lists. Forwarding headers are
believed only from trusted proxies; from anyone else they are replaced, not extended.
"""

from __future__ import annotations

import re

from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Rebuilt by the gateway; from an untrusted peer, whatever the client wrote is dropped.
FORWARDING = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "via")
_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
# Framing is ours to set on each side: the body may be re-framed (chunked vs length).
FRAMING = frozenset({"content-length", "transfer-encoding"})


def request_head(method: str, target: str, headers: MultiMapping[str]) -> bytes:
    """An HTTP/1.1 request head for an upstream."""
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    lines.append("\r\n")
    # aiohttp decoded header bytes as UTF-8 with surrogateescape: this restores them.
    return "".join(lines).encode("utf-8", "surrogateescape")


def connection_tokens(headers: MultiMapping[str]) -> set[str]:
    return {
        token.strip().lower()
        for line in headers.getall("Connection", ())
        for token in line.split(",")
        if token.strip()
    }


_SKIP = HOP_BY_HOP | FRAMING
# Twice per proxied request (request and response): the sets to skip are built once per
# ``drop`` tuple, and a Connection header naming only itself (keep-alive, close) adds
# nothing that is not dropped already.
_SKIP_WITH: dict[tuple[str, ...], frozenset[str]] = {}
_PLAIN_CONNECTION = frozenset({"keep-alive", "close", "Keep-Alive", "Close", "upgrade"})


def end_to_end(headers: MultiMapping[str], *, drop: tuple[str, ...] = ()) -> CIMultiDict[str]:
    """The headers minus hop-by-hop fields, framing, and ``drop``; repeats kept in order."""
    skip = _SKIP_WITH.get(drop)
    if skip is None:
        skip = _SKIP_WITH[drop] = _SKIP | {d.lower() for d in drop}
    connection = headers.getall("Connection", ())
    if connection and not (len(connection) == 1 and connection[0] in _PLAIN_CONNECTION):
        skip = skip | connection_tokens(headers)
    return CIMultiDict(
        [(name, value) for name, value in headers.items() if name.lower() not in skip]
    )


_REQUEST_DROP = ("expect", *FORWARDING)


def _forwarded_node(address: str) -> str:
    # RFC 7239 §6: IPv6 addresses are bracketed and quoted.
    return f'"[{address}]"' if ":" in address else address


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    peer: str,
    peer_trusted: bool,
    scheme: str,
    host_override: str | None,
    forwarded: bool,
    via: str | None,
    target_host: str = "",
) -> CIMultiDict[str]:
    """What the upstream sees: end-to-end headers plus X-Forwarded-*, optionally
    Forwarded and Via. ``Expect`` is answered by the gateway itself, so not forwarded.
    There is always a ``Host`` (RFC 9112 §3.2): the override, else the client's (even
    when its ``Connection`` names it), else ``target_host``, the upstream's own."""
    headers = end_to_end(incoming, drop=_REQUEST_DROP)
    host = incoming.get("Host", "")
    headers["Host"] = host_override or host or target_host

    def prior(name: str) -> str:
        return ", ".join(incoming.getall(name, ())) if peer_trusted else ""

    def extend(name: str, value: str) -> None:
        before = prior(name)
        headers[name] = f"{before}, {value}" if before else value

    extend("X-Forwarded-For", peer)
    headers["X-Forwarded-Proto"] = prior("X-Forwarded-Proto") or scheme
    if forwarded_host := prior("X-Forwarded-Host") or host:
        headers["X-Forwarded-Host"] = forwarded_host
    if forwarded:
        # host= is the client's Host header: only a plain host[:port] may go in, so a client
        # cannot close the quote and append a forged "for=" element.
        safe_host = host if _HOST_PORT.fullmatch(host) else ""
        extend(
            "Forwarded",
            f"for={_forwarded_node(peer)};proto={scheme}"
            + (f';host="{safe_host}"' if safe_host else ""),
        )
    elif prior_forwarded := prior("Forwarded"):
        headers["Forwarded"] = prior_forwarded
    # Via is appended by every hop, trusted or not (RFC 9110 §7.6.3).
    via_chain = [line for line in incoming.getall("Via", ())] + ([via] if via else [])
    if via_chain:
        headers["Via"] = ", ".join(via_chain)
    return headers
