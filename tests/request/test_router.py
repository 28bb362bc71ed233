"""Routing on host and path prefix, first match wins."""

from __future__ import annotations

import pytest

from gateway.request.router import HostMatcher, Router, RouteRule, normalize_host, path_matches


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("Example.COM:8080", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:8080", "[::1]"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize_host(raw: str | None, host: str) -> None:
    assert normalize_host(raw) == host


@pytest.mark.parametrize(
    ("prefix", "path", "expected"),
    [
        ("/", "/anything", True),
        ("/api", "/api", True),
        ("/api", "/api/v1", True),
        ("/api", "/apix", False),
        ("/api/", "/api", False),
        ("/api/", "/api/x", True),
    ],
)
def test_prefix_matches_whole_segments(prefix: str, path: str, expected: bool) -> None:
    assert path_matches(prefix, path) is expected


def test_wildcard_host_matches_one_label() -> None:
    matcher = HostMatcher.of(["example.com", "*.example.org"])
    assert matcher.matches("example.com")
    assert matcher.matches("a.example.org")
    assert not matcher.matches("example.org")
    assert not matcher.matches("a.b.example.org")
    assert not matcher.matches("aexample.org")


def test_first_matching_route_wins() -> None:
    router: Router[str] = Router(
        [
            RouteRule(HostMatcher.of(["api.example.com"]), "/", "api"),
            RouteRule(HostMatcher.of([]), "/static", "static"),
            RouteRule(HostMatcher.of([]), "/", "fallback"),
        ]
    )
    assert router.match("api.example.com", "/static/x") == "api"
    assert router.match("www.example.com", "/static/x") == "static"
    assert router.match("www.example.com", "/staticx") == "fallback"


def test_no_match_is_none() -> None:
    router: Router[str] = Router([RouteRule(HostMatcher.of(["a.com"]), "/", "a")])
    assert router.match("b.com", "/") is None
