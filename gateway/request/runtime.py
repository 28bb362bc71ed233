"""The runtime built from one config: route table, rate limit rules, request-path helpers.

A :class:`Runtime` is complete before it serves; a reload builds a new one off to the
side and swaps it in with one assignment, so a request sees either the old or the new
config, never a mix. Rate limit rules whose settings did not change carry their buckets
over, so a reload does not hand every client a fresh burst.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from gateway.config import Config, Route
from gateway.events.sink import Sink
from gateway.events.tracker import Tracker
from gateway.handlers import Handler
from gateway.handlers.kinds import BuildContext, Kind, kind_name, kind_of
from gateway.handlers.static import StaticHandler
from gateway.limits.ratelimit import Limiter, RouteLimits, Rule, local_limiter_for
from gateway.links.model import Link
from gateway.links.store import LinkStore
from gateway.middleware.chain import RouteMiddleware
from gateway.middleware.forward import auth_proxy
from gateway.observability.metrics import Metrics
from gateway.proxy.group import UpstreamGroup, UpstreamRegistry
from gateway.request.clientip import ClientIPResolver
from gateway.request.cors import Cors
from gateway.request.response import HstsPolicy
from gateway.request.router import HostMatcher, Router, RouteRule
from gateway.tls.storage import Storage

if TYPE_CHECKING:  # redis, ua-parser, maxminddb: imported only when configured
    from gateway.cache.service import CacheService
    from gateway.enrich.enricher import Enricher
    from gateway.limits.shared import SharedBackend


@dataclass(frozen=True, slots=True)
class ActiveRoute:
    """A route ready to serve."""

    name: str
    max_body: int
    handler: Handler
    limits: RouteLimits | None = None
    track: bool = False
    cors: Cors | None = None  # the route's browser callers: on its error answers too
    middleware: RouteMiddleware | None = None  # ip lists, auth, header rules, compression


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything the request path reads, derived from one :class:`Config`."""

    config: Config
    generation: int
    router: Router[ActiveRoute]
    client_ip: ClientIPResolver
    rules: Mapping[str, Rule]
    tracker: Tracker
    sink: Sink
    static_links: Mapping[str, Link]
    upstream_groups: frozenset[UpstreamGroup] = frozenset()
    hsts: HstsPolicy | None = None
    # Where the answers to ACME HTTP-01 challenges are published, when tls.acme is set.
    acme_storage: Storage | None = None


def _rules(config: Config, services: Services, previous: Mapping[str, Rule]) -> dict[str, Rule]:
    rules = {}
    for rule_config in config.rate_limits.rules:
        old = previous.get(rule_config.name)
        if old is not None and old.config == rule_config:
            rules[rule_config.name] = old
            continue
        limiter: Limiter = local_limiter_for(
            rule_config,
            config.server.worker_count,
            services.metrics.limiter_size(rule_config.name),
        )
        if rule_config.shared and services.limits_backend is not None:
            from gateway.limits.shared import SharedLimiter

            # The local share stays as the fallback for when Redis cannot answer.
            limiter = SharedLimiter(rule_config, services.limits_backend, limiter)
        rules[rule_config.name] = Rule(rule_config, limiter)
    return rules


def _enricher(config: Config, services: Services, previous: Runtime | None) -> Enricher | None:
    """The enrichment steps, kept from ``previous`` while their config is the same (its
    caches stay warm, its databases open)."""
    enrich = config.tracking.enrich
    if enrich is None or not enrich.any_step:
        return None
    if previous is not None:
        old = previous.tracker.enricher
        same_truncate = previous.config.tracking.truncate_ip == config.tracking.truncate_ip
        if old is not None and old.config == enrich and same_truncate:
            return old
    from gateway.enrich.enricher import Enricher  # ua-parser and maxminddb when used

    metrics = services.metrics
    return Enricher(
        enrich,
        legacy_truncate=config.tracking.truncate_ip,
        dead_letter_topic=config.kafka.dead_letter_topic if config.kafka else "events-dead-letter",
        count=metrics.count_enrichment,
        report_geo=lambda path, outcome: metrics.count_enrichment("geo", (path, outcome)),
    )


def _build(kind: Kind, context: BuildContext, route: Route) -> Handler:
    return kind.build(route, context)


def build_runtime(config: Config, services: Services, previous: Runtime | None = None) -> Runtime:
    """The runtime for ``config``; ``previous`` lends the buckets of unchanged rules."""
    server = config.server
    metrics = services.metrics
    tracker = Tracker(
        config.tracking,
        _enricher(config, services, previous),
        experiments=bool(config.experiments),
    )
    resolver = ClientIPResolver(server.trusted_proxies, server.client_ip_header)
    rules = _rules(config, services, previous.rules if previous is not None else {})
    # Parsed once per config: the redirect handlers and the link API share them.
    static_links = {
        raw["slug"]: Link.model_validate_json(orjson.dumps(raw))
        for raw in (config.redirects.links if config.redirects else ())
    }
    context = BuildContext(
        config, tracker, services.sink, metrics, services.upstreams,
        lambda: services.links, resolver, static_links, services.cache,
    )  # fmt: skip
    routes = []
    for route in config.routes:
        limits = None
        if route.rate_limits:
            limits = RouteLimits(
                [rules[name] for name in route.rate_limits],
                flag_only=route.rate_limit_mode == "flag",
                record=metrics.observe_limit,
            )
        max_body = route.max_body_bytes
        kind = kind_of(route)
        handler = kind.build(route, context)
        if config.experiments:
            from gateway.experiments.build import with_experiments

            handler = with_experiments(
                route, handler, config.experiments, functools.partial(_build, kind, context),
                tracker, services.sink, metrics.count_exposure,
            )  # fmt: skip
        target = ActiveRoute(
            name=route.name,
            max_body=max_body if max_body is not None else server.limits.max_body_bytes,
            handler=handler,
            limits=limits,
            track=route.track,
            cors=tracker.cors if kind.cors else None,
            middleware=RouteMiddleware.build(route, services.upstreams.get),
        )
        routes.append(RouteRule(HostMatcher.of(route.match.hosts), route.match.path_prefix, target))
    metrics.set_route_kinds({route.name: kind_name(route) for route in config.routes})
    return Runtime(
        config=config,
        generation=previous.generation + 1 if previous is not None else 1,
        router=Router(routes),
        client_ip=resolver,
        rules=rules,
        tracker=tracker,
        sink=services.sink,
        static_links=static_links,
        upstream_groups=frozenset(
            [services.upstreams.get(route.proxy) for route in config.routes if route.proxy]
            + [
                services.upstreams.get(variant.proxy)
                for experiment in config.experiments
                for variant in experiment.variants
                if variant.proxy
            ]
            + [
                services.upstreams.get(auth_proxy(route.forward_auth))
                for route in config.routes
                if route.forward_auth
            ]
        ),
        hsts=HstsPolicy(config.tls.hsts) if config.tls and config.tls.hsts else None,
        acme_storage=services.acme_storage,
    )


@dataclass(slots=True)
class Services:
    """The long-lived things of a worker that runtimes use but do not own."""

    metrics: Metrics
    upstreams: UpstreamRegistry
    sink: Sink
    links: LinkStore | None = None  # set once the worker's link store has loaded
    limits_backend: SharedBackend | None = None  # Redis, for rules with "shared": true
    cache: CacheService | None = None  # with a cached route at start: the edge cache
    # tls.acme's storage at start (HTTP-01 answers; a change of tls.acme needs a restart).
    acme_storage: Storage | None = None


def _release(old: Runtime) -> None:
    """Free what the replaced runtime's handlers hold (static caches, in bytes metrics)."""
    for route in old.router.targets():
        if isinstance(route.handler, StaticHandler):
            route.handler.cache.clear()


class RuntimeHolder:
    """The one mutable cell: which runtime serves new requests."""

    __slots__ = ("current", "services")

    def __init__(self, config: Config, services: Services) -> None:
        self.services = services
        self.current = build_runtime(config, services)

    async def swap(self, config: Config) -> Runtime:
        old = self.current
        self.current = build_runtime(config, self.services, old)
        _release(old)
        # Upstream groups the new config no longer names: close their pools and probes.
        await self.services.upstreams.retain(set(self.current.upstream_groups))
        return self.current
