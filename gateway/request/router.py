"""Route table: picks the first configured route whose host and path prefix match."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


def normalize_host(host: str | None) -> str:
    """Lowercase host without port or trailing dot; '' when absent."""
    if not host:
        return ""
    host = host.lower()
    if host.startswith("["):  # IPv6 literal, RFC 3986 §3.2.2
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    host = host.partition(":")[0]
    return host.rstrip(".")


def path_matches(prefix: str, path: str) -> bool:
    """Prefix match on whole segments: "/api" takes "/api" and "/api/x", never "/apix"."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


@dataclass(frozen=True, slots=True)
class HostMatcher:
    """Exact names and one-label wildcards ("*.example.com" takes "a.example.com" only)."""

    exact: frozenset[str]
    wildcard_parents: frozenset[str]

    @classmethod
    def of(cls, hosts: Sequence[str]) -> HostMatcher:
        exact = frozenset(h for h in hosts if not h.startswith("*."))
        parents = frozenset(h[2:] for h in hosts if h.startswith("*."))
        return cls(exact, parents)

    @property
    def any_host(self) -> bool:
        return not self.exact and not self.wildcard_parents

    def matches(self, host: str) -> bool:
        if self.any_host or host in self.exact:
            return True
        label, dot, parent = host.partition(".")
        return bool(dot and label) and parent in self.wildcard_parents


@dataclass(frozen=True, slots=True)
class RouteRule(Generic[T]):
    """A route's match criteria and the target it resolves to."""

    hosts: HostMatcher
    path_prefix: str
    target: T


class Router(Generic[T]):
    """Ordered first-match routing on (host, path)."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Sequence[RouteRule[T]]) -> None:
        self._rules = tuple(rules)

    def targets(self) -> list[T]:
        return [rule.target for rule in self._rules]

    def match(self, host: str, path: str) -> T | None:
        for rule in self._rules:
            if rule.hosts.matches(host) and path_matches(rule.path_prefix, path):
                return rule.target
        return None
