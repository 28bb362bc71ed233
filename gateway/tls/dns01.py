"""ACME DNS-01 (RFC 8555 §8.4): the challenge's TXT record put in the zone through an
RFC 2136 dynamic update signed with TSIG (RFC 8945), as BIND, Knot, PowerDNS and many
providers take it; the CA is told to validate only once every server in
``check_servers`` answers the record; the record is deleted afterwards. Blocking (the
renewer runs in a thread of its own); dnspython is imported only when configured."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

if TYPE_CHECKING:
    from gateway.config import AcmeDns

POLL = 0.5  # seconds between two looks for the record on a server
QUERY_TIMEOUT = 5.0


class DnsError(Exception):
    """An update the server refused, or a record that did not show up in time."""


def _address(server: str) -> tuple[str, int]:
    """``host[:port]`` (port 53), IPv6 as ``[::1]:53``, as an address to send to."""
    host, port = server, 53
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif server.count(":") == 1:
        host, raw = server.split(":")
        port = int(raw)
    return str(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0]), port


class DnsUpdater:
    def __init__(self, config: AcmeDns) -> None:
        self._config = config
        self._zone = dns.name.from_text(config.zone)
        tsig = config.tsig
        self._keyring = dns.tsigkeyring.from_text({tsig.name: tsig.secret})
        self._key_name = dns.name.from_text(tsig.name)
        self._algorithm = dns.name.from_text(tsig.algorithm)

    def _send(self, update: dns.update.UpdateMessage) -> None:
        host, port = _address(self._config.server)
        try:
            answer = dns.query.tcp(update, host, port=port, timeout=QUERY_TIMEOUT)
        except dns.tsig.PeerError as exc:  # BADSIG, BADKEY, BADTIME from the server
            raise DnsError(
                f"DNS update refused by {self._config.server}: the TSIG key was not "
                f"accepted ({exc})"
            ) from None
        except (OSError, dns.exception.DNSException) as exc:
            raise DnsError(f"DNS update to {self._config.server} failed: {exc}") from None
        if answer.rcode() != dns.rcode.NOERROR:
            refused = dns.rcode.to_text(answer.rcode())
            raise DnsError(f"DNS update refused by {self._config.server}: {refused}")

    def _update(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(
            self._zone, keyring=self._keyring, keyname=self._key_name,
            keyalgorithm=self._algorithm,
        )  # fmt: skip

    def add(self, name: str, value: str) -> None:
        """Put ``value`` in a TXT record at ``name`` (a fully qualified name in the zone)."""
        update = self._update()
        update.add(self._relative(name), self._config.ttl, dns.rdatatype.TXT, f'"{value}"')
        self._send(update)

    def remove(self, name: str, value: str) -> None:
        update = self._update()
        update.delete(self._relative(name), dns.rdatatype.TXT, f'"{value}"')
        self._send(update)

    def _relative(self, name: str) -> dns.name.Name:
        absolute = dns.name.from_text(name)
        if not absolute.is_subdomain(self._zone):
            raise DnsError(f"{name} is not in the zone {self._config.zone}")
        return absolute.relativize(self._zone)

    def wait_visible(self, name: str, value: str) -> None:
        """Until every server of ``check_servers`` (the updated one by default) answers
        ``value`` at ``name``; DnsError after ``propagation_timeout`` seconds."""
        config = self._config
        deadline = time.monotonic() + config.propagation_timeout
        for server in config.check_servers or (config.server,):
            while value not in _txt(server, name):
                if time.monotonic() > deadline:
                    raise DnsError(
                        f"the TXT record at {name} did not show on {server} within "
                        f"{config.propagation_timeout:g} s"
                    )
                time.sleep(POLL)


def _txt(server: str, name: str) -> list[str]:
    host, port = _address(server)
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    try:
        answer = dns.query.udp(query, host, port=port, timeout=QUERY_TIMEOUT)
    except (OSError, dns.exception.DNSException):
        return []  # asked again at the next poll
    return [
        b"".join(item.strings).decode(errors="replace")
        for rrset in answer.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for item in rrset
    ]
