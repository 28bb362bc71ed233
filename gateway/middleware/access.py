"""``ip_allow`` / ``ip_deny``: CIDR lists on the client address (after trusted proxies
have been walked, so an X-Forwarded-For from anyone else changes nothing)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gateway.request.clientip import parse_ip


class IPFilter:
    """Deny wins over allow; an empty allow list allows every address not denied."""

    __slots__ = ("_allow", "_deny")

    def __init__(self, allow: Iterable[str], deny: Iterable[str]) -> None:
        self._allow = tuple(ipaddress.ip_network(c, strict=False) for c in allow)
        self._deny = tuple(ipaddress.ip_network(c, strict=False) for c in deny)

    def refuses(self, client_ip: str) -> bool:
        ip = parse_ip(client_ip)
        if ip is None:  # no address (a Unix socket peer): only an open list lets it in
            return bool(self._allow)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        if any(ip in network for network in self._deny):
            return True
        return bool(self._allow) and not any(ip in network for network in self._allow)
