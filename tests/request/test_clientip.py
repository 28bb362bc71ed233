"""Client address: forwarded headers count only when a trusted proxy sent them."""

from __future__ import annotations

from multidict import CIMultiDict

from gateway.request.clientip import ClientIPResolver, parse_ip


def xff(*values: str) -> CIMultiDict[str]:
    return CIMultiDict(("X-Forwarded-For", v) for v in values)


def test_no_trusted_proxies_means_peer() -> None:
    resolver = ClientIPResolver([])
    assert resolver.resolve("203.0.113.9", xff("1.2.3.4")) == "203.0.113.9"


def test_spoofed_header_from_untrusted_peer_is_ignored() -> None:
    resolver = ClientIPResolver(["10.0.0.0/8"])
    assert resolver.resolve("203.0.113.9", xff("1.2.3.4")) == "203.0.113.9"


def test_trusted_peer_hands_over_to_first_untrusted_hop_from_the_right() -> None:
    resolver = ClientIPResolver(["10.0.0.0/8"])
    # The client forged "6.6.6.6"; the trusted proxy 10.0.0.2 appended what it saw.
    headers = xff("6.6.6.6, 198.51.100.7, 10.0.0.2")
    assert resolver.resolve("10.0.0.1", headers) == "198.51.100.7"


def test_several_header_lines_are_one_list() -> None:
    resolver = ClientIPResolver(["10.0.0.0/8"])
    assert resolver.resolve("10.0.0.1", xff("6.6.6.6", "198.51.100.7")) == "198.51.100.7"


def test_all_hops_trusted_gives_the_leftmost() -> None:
    resolver = ClientIPResolver(["10.0.0.0/8"])
    assert resolver.resolve("10.0.0.1", xff("10.0.0.5, 10.0.0.4")) == "10.0.0.5"


def test_garbage_hop_stops_at_last_good_one() -> None:
    resolver = ClientIPResolver(["10.0.0.0/8"])
    assert resolver.resolve("10.0.0.1", xff("1.1.1.1, <script>, 10.0.0.3")) == "10.0.0.3"


def test_trusted_peer_without_header_is_the_client() -> None:
    resolver = ClientIPResolver(["10.0.0.0/8"])
    assert resolver.resolve("10.0.0.1", CIMultiDict()) == "10.0.0.1"


def test_forwarded_header_mode() -> None:
    resolver = ClientIPResolver(["10.0.0.0/8"], header="forwarded")
    forwarded = [{"for": "6.6.6.6"}, {"for": '"[2001:db8::1]:4711"'}, {"for": "10.0.0.9"}]
    # X-Forwarded-For is not the configured header, so it must be ignored.
    assert resolver.resolve("10.0.0.1", xff("9.9.9.9"), forwarded) == "2001:db8::1"


def test_parse_ip_forms() -> None:
    assert str(parse_ip("192.0.2.1:8080")) == "192.0.2.1"
    assert str(parse_ip("[2001:db8::1]:443")) == "2001:db8::1"
    assert str(parse_ip(" 2001:db8::2 ")) == "2001:db8::2"
    assert parse_ip("unknown") is None
    assert parse_ip("_hidden") is None
