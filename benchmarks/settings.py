"""Which servers are compared and how hard and long each is loaded; read by runner and report."""

from __future__ import annotations

from dataclasses import dataclass

IDLE_CONNECTIONS = 10_000
SMOKE_IDLE_CONNECTIONS = 500


@dataclass(frozen=True, slots=True)
class Settings:
    """One benchmark run's knobs; ``workers`` is the core budget each server gets."""

    duration: int  # whole seconds: wrk -d takes no fractions
    connections: int
    workers: int
    rounds: int
    idle_connections: int
    broker: str = "kafka"  # what tracking runs send to: "kafka" (Apache Kafka) or "tansu"


# The servers compared, in the order each round runs them and the report lists them;
# nginx_log runs only in scenarios whose site has an nginx+log variant (recording hits),
# varnish only in those with a VCL (the caching scenarios).
EVERYWHERE = ("gateway", "nginx", "caddy")
SERVERS = (*EVERYWHERE, "nginx_log", "varnish")
LABELS = {
    "gateway": "gateway",
    "nginx": "nginx",
    "caddy": "Caddy",
    "nginx_log": "nginx+log",
    "varnish": "Varnish",
}


def capacity(clients: int, *, proxied: bool = False) -> int:
    """Connections each server worker must accept for ``clients``, with slack for probes.

    A proxied request also holds a connection to the upstream, and nginx counts both in
    worker_connections. Sized per scenario because nginx preallocates every connection
    slot, which shows in RSS.
    """
    return clients * (2 if proxied else 1) + 256
