"""Which address is the client: the socket peer, or a forwarded hop vouched for by a trusted proxy.

Forwarded headers are believed only when the peer is a trusted proxy, and then read right to
left: each trusted hop hands over to the one it saw, and the first untrusted hop is the client.
A hostile client can put anything at the left of the list; it never gets past a trusted hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from multidict import MultiMapping

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(value: str) -> IPAddress | None:
    """An IP from a header hop: bare, "ip:port", "[v6]" or "[v6]:port"; None if it is not one."""
    value = value.strip().strip('"')
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


class ClientIPResolver:
    """Resolves the client address of a request from its peer and forwarded headers."""

    __slots__ = ("_header", "_networks")

    def __init__(
        self,
        trusted: Iterable[str],
        header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
    ) -> None:
        self._networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted)
        self._header = header

    def is_trusted(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self._networks)

    def resolve(
        self,
        peer: str | None,
        headers: MultiMapping[str],
        forwarded: Sequence[Mapping[str, str]] = (),
    ) -> str:
        """The client address as text; the peer itself unless it is a trusted proxy.

        ``forwarded`` is the parsed RFC 7239 header (aiohttp's ``request.forwarded``).
        """
        if not self._networks or peer is None:
            return peer or ""
        peer_ip = parse_ip(peer)
        if peer_ip is None or not self.is_trusted(peer_ip):
            return peer
        if self._header == "forwarded":
            hops = [element.get("for", "") for element in forwarded]
        else:
            # Several X-Forwarded-For lines are one list, in order (RFC 9110 §5.3).
            lines = headers.getall("X-Forwarded-For", ())
            hops = [hop for line in lines for hop in line.split(",")]
        client = peer_ip
        for hop in reversed(hops):
            hop_ip = parse_ip(hop)
            if hop_ip is None:
                # Only a trusted proxy wrote the hops we have walked so far; a malformed
                # one here means we cannot see further, so the last good hop stands.
                break
            client = hop_ip
            if not self.is_trusted(hop_ip):
                break
        return str(client)
