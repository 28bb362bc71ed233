"""Proxy building blocks without sockets: balancing policies and header rewriting."""

from __future__ import annotations

import random
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy.balancer import Balancer, Target
from gateway.proxy.headers import end_to_end, upstream_request_headers
from gateway.proxy.paths import ambiguous_path


def targets(n: int) -> list[Target]:
    return [Target(f"http://10.0.0.{i}:80") for i in range(n)]


def test_consistent_hash_moves_only_the_removed_targets_keys() -> None:
    pool = targets(5)
    before = Balancer(pool, "header_hash")
    owners = {f"user-{i}": before.pick(f"user-{i}") for i in range(2000)}
    removed = pool[2]
    after = Balancer([t for t in pool if t is not removed], "header_hash")
    moved = [key for key, owner in owners.items() if after.pick(key) is not owner]
    assert moved and all(owners[key] is removed for key in moved)
    assert 300 < len(moved) < 500  # about a fifth of the keys


def test_passive_health_marks_down_for_cooldown() -> None:
    now = [100.0]
    pool = targets(2)
    balancer = Balancer(pool, "round_robin", clock=lambda: now[0])
    assert pool[0].record_failure(now[0], threshold=2, window=10, cooldown=30) is False
    assert pool[0].record_failure(now[0] + 1, threshold=2, window=10, cooldown=30) is True
    assert {balancer.pick() for _ in range(4)} == {pool[1]}
    now[0] += 31
    assert {balancer.pick() for _ in range(4)} == set(pool)


def test_failures_outside_the_window_do_not_count() -> None:
    target = Target("http://a")
    assert not target.record_failure(0, threshold=2, window=10, cooldown=30)
    assert not target.record_failure(11, threshold=2, window=10, cooldown=30)


def test_random_two_prefers_the_less_loaded() -> None:
    pool = targets(2)
    pool[0].in_flight = 5
    balancer = Balancer(pool, "random_two", rng=random.Random(1))
    assert {balancer.pick() for _ in range(10)} == {pool[1]}


def test_exclude_skips_tried_targets() -> None:
    pool = targets(2)
    balancer = Balancer(pool, "round_robin")
    assert balancer.pick(exclude=frozenset({pool[0]})) is pool[1]
    assert balancer.pick(exclude=frozenset(pool)) is None


def test_end_to_end_drops_hop_by_hop_and_connection_listed() -> None:
    headers = CIMultiDict(
        [
            ("Connection", "keep-alive, X-Private"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "5"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic x"),
            ("X-Private", "secret"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Cache-Control", "no-cache"),
        ]
    )
    assert list(end_to_end(headers).items()) == [
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Cache-Control", "no-cache"),
    ]


def test_fields_named_in_connection_are_dropped_however_it_is_written() -> None:
    for connection in (["keep-alive"], ["Close"], ["close, X-A"], ["keep-alive", "X-A"],
                       ["KEEP-ALIVE,x-a"]):  # fmt: skip
        headers = CIMultiDict([("X-A", "hop"), ("Keep-Alive", "timeout=5"), ("X-B", "end")])
        for line in connection:
            headers.add("Connection", line)
        kept = list(end_to_end(headers).items())
        named = any("x-a" in line.lower() for line in connection)
        assert kept == ([] if named else [("X-A", "hop")]) + [("X-B", "end")], connection


def test_untrusted_client_cannot_seed_forwarding_headers() -> None:
    incoming = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Host", "shop.example"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.example"),
                ("Forwarded", "for=6.6.6.6"),
                ("Expect", "100-continue"),
            ]
        )
    )
    out = upstream_request_headers(
        incoming, peer="203.0.113.5", peer_trusted=False, scheme="http",
        host_override=None, forwarded=False, via=None,
    )  # fmt: skip
    assert list(out.items()) == [
        ("Host", "shop.example"),
        ("X-Forwarded-For", "203.0.113.5"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "shop.example"),
    ]


def test_a_hostile_host_cannot_forge_a_forwarded_element() -> None:
    incoming = CIMultiDictProxy(CIMultiDict([("Host", 'x", for=6.6.6.6;by="y')]))
    out = upstream_request_headers(
        incoming, peer="203.0.113.5", peer_trusted=False, scheme="http",
        host_override=None, forwarded=True, via=None,
    )  # fmt: skip
    assert out["Forwarded"] == "for=203.0.113.5;proto=http"


def test_trusted_proxy_headers_are_extended_and_host_overridden() -> None:
    incoming = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Host", "shop.example"),
                ("X-Forwarded-For", "198.51.100.1"),
                ("X-Forwarded-Proto", "https"),
                ("Forwarded", "for=198.51.100.1;proto=https"),
                ("Via", "1.1 cdn"),
            ]
        )
    )
    out = upstream_request_headers(
        incoming, peer="2001:db8::7", peer_trusted=True, scheme="http",
        host_override="backend.internal", forwarded=True, via="1.1 edge-gateway",
    )  # fmt: skip
    assert out["X-Forwarded-For"] == "198.51.100.1, 2001:db8::7"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["Forwarded"] == (
        'for=198.51.100.1;proto=https, for="[2001:db8::7]";proto=http;host="shop.example"'
    )
    assert out["Via"] == "1.1 cdn, 1.1 edge-gateway"
    assert out["Host"] == "backend.internal"


def test_upstream_always_gets_a_host() -> None:
    # Fault run F7: "Connection: host" dropped the client's Host and sent none upstream.
    named = CIMultiDictProxy(CIMultiDict([("Host", "shop.example"), ("Connection", "host")]))
    none = CIMultiDictProxy(CIMultiDict([("Accept", "*/*")]))
    common: dict[str, Any] = {
        "peer": "203.0.113.5", "peer_trusted": False, "scheme": "http",
        "forwarded": False, "via": None, "target_host": "10.0.0.7:8080",
    }  # fmt: skip
    assert upstream_request_headers(named, host_override=None, **common)["Host"] == "shop.example"
    assert upstream_request_headers(none, host_override=None, **common)["Host"] == "10.0.0.7:8080"
    assert upstream_request_headers(none, host_override="b.internal", **common)["Host"] == (
        "b.internal"
    )


@pytest.mark.parametrize(
    ("raw_path", "reason"),
    [
        ("/app/..;/admin", "dot segment with parameters in path"),
        ("/app/.;x=1/admin", "dot segment with parameters in path"),
        ("/app/%2e%2e;/admin", "dot segment with parameters in path"),
        ("/app/..\\admin", "backslash in path"),
        ("/app/..%5cadmin", "%5c in path"),
        ("/app/%c0%ae%c0%ae/admin", "%c0 in path"),
        ("/app/%252e%252e/admin", "%252e in path"),
        ("/app/file%00.txt", "%00 in path"),
        ("/app/a%25%32%65", None),  # an encoded "%" then "2e" spelled out: no double decode
        ("/app/a;jsessionid=1/b", None),
        ("/app/100%25?x=..;/", None),  # the query is the upstream's own business
        ("/app/caf%C3%A9", None),
    ],
)
def test_paths_an_upstream_could_read_as_traversal(raw_path: str, reason: str | None) -> None:
    assert ambiguous_path(raw_path) == reason
