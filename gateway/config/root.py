"""The whole config document, and the checks that span its sections."""

from __future__ import annotations

from collections.abc import Iterator

from gateway.config import cache, enrich, events, experiments, limits, links, routes, server, tls
from gateway.config.base import (
    ConfigIssue,
    _Model,
)
from gateway.config.cache import Cache
from gateway.config.events import Kafka, Spool, Tracking
from gateway.config.experiments import Experiment
from gateway.config.limits import RateLimits
from gateway.config.links import Redirects
from gateway.config.routes import Route
from gateway.config.server import Server
from gateway.config.tls import Tls


class Config(_Model):
    """The whole gateway configuration."""

    server: Server
    routes: tuple[Route, ...] = ()
    # Capabilities that later versions add; present in a file they are an error, never ignored.
    kafka: Kafka | None = None
    spool: Spool = Spool()
    tracking: Tracking = Tracking()
    tls: Tls | None = None
    rate_limits: RateLimits = RateLimits()
    redirects: Redirects | None = None
    cache: Cache = Cache()
    experiments: tuple[Experiment, ...] = ()


def cross_checks(config: Config) -> Iterator[ConfigIssue]:
    """Checks that span several keys, each reported at the key that must change."""
    for checks in (server.checks, events.checks, tls.checks, links.checks, limits.checks,
                   routes.checks, cache.checks, enrich.checks, experiments.checks):  # fmt: skip
        yield from checks(config)
