"""The registry of handler kinds: for each key a route may carry (``respond``, ``proxy``,
...), how to build its handler and how ``gateway check`` describes it. A new kind is
its config model in ``gateway.config``, a handler module here, and one entry below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.config import HANDLER_KINDS, Config, Route
from gateway.events.sink import Sink
from gateway.events.tracker import Tracker
from gateway.handlers import Handler
from gateway.handlers.collect import CollectHandler
from gateway.handlers.intake import IntakeHandler
from gateway.handlers.proxy import ProxyHandler
from gateway.handlers.redirect import RedirectHandler
from gateway.handlers.respond import RespondHandler
from gateway.handlers.segment import SegmentHandler
from gateway.handlers.snowplow import SnowplowHandler
from gateway.handlers.static import StaticHandler
from gateway.links.model import Link
from gateway.links.store import LinkStore
from gateway.observability.metrics import Metrics
from gateway.proxy.group import UpstreamRegistry
from gateway.request.clientip import ClientIPResolver
from gateway.request.errors import HTTPError

if TYPE_CHECKING:  # only a config with a cached route loads the cache
    from gateway.cache.service import CacheService

log = logging.getLogger("gateway.handlers")


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What handlers are built from, besides their route: one per runtime."""

    config: Config
    tracker: Tracker
    sink: Sink
    metrics: Metrics
    upstreams: UpstreamRegistry
    links: Callable[[], LinkStore | None]  # None until the worker's store has loaded
    resolver: ClientIPResolver
    static_links: Mapping[str, Link]
    cache: CacheService | None = None  # the worker's edge cache, when a route had one at start


@dataclass(frozen=True, slots=True)
class Kind:
    build: Callable[[Route, BuildContext], Handler]
    describe: Callable[[Route, Config], str]
    # Called by browsers from other origins: every answer, errors too, carries CORS.
    cors: bool = False


def _durable(route: Route, config: Config) -> bool:
    return (route.delivery or config.tracking.delivery) == "durable"


def _delivery(route: Route, config: Config) -> str:
    return route.delivery or config.tracking.delivery


class _Off:
    """An ingestion endpoint its config turned off: 404, like a path nobody serves."""

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        raise HTTPError(404, "no route for this host and path")


def _segment(route: Route, ctx: BuildContext) -> Handler:
    assert route.segment is not None
    if not route.segment.enabled:
        return _Off()
    durable = _durable(route, ctx.config)
    return SegmentHandler(
        route.match.path_prefix, ctx.tracker, ctx.sink,
        durable=durable, integrations=route.segment.integrations,
    )  # fmt: skip


def _redirect(route: Route, ctx: BuildContext) -> Handler:
    assert route.redirect is not None and ctx.config.redirects is not None
    return RedirectHandler(
        ctx.config.redirects, route.match.path_prefix, route.redirect.adhoc, ctx.links,
        ctx.static_links, ctx.tracker, ctx.sink, ctx.metrics.redirect_misses.inc,
    )  # fmt: skip


def _proxy(route: Route, ctx: BuildContext) -> Handler:
    assert route.proxy is not None
    group = ctx.upstreams.get(route.proxy)
    cache = None
    if route.cache is not None:
        if ctx.cache is None:
            log.warning("route %s: a cache added by a reload needs a restart", route.name)
        else:
            from gateway.cache.machine import CacheMachine

            cache = CacheMachine(route.name, route.cache, ctx.cache)
    return ProxyHandler(route.proxy, route.match.path_prefix, group, ctx.resolver, cache)


def _respond(route: Route, ctx: BuildContext) -> Handler:
    assert route.respond is not None
    return RespondHandler(route.respond)


def _collect(route: Route, ctx: BuildContext) -> Handler:
    assert route.collect is not None
    durable = _durable(route, ctx.config)
    count = ctx.metrics.websocket_frames
    return CollectHandler(
        route.collect, route.match.path_prefix, ctx.tracker, ctx.sink, durable,
        lambda outcome: count.labels(outcome).inc(), ctx.config.redirects,
    )  # fmt: skip


def _intake(route: Route, ctx: BuildContext) -> Handler:
    assert route.intake is not None
    durable = _durable(route, ctx.config)
    enricher = ctx.tracker.enricher
    return IntakeHandler(
        route.intake, ctx.config.kafka, ctx.sink, durable=durable, node=ctx.tracker.node,
        mask_ip=enricher.intake_mask if enricher is not None else None,
    )  # fmt: skip


def _snowplow(route: Route, ctx: BuildContext) -> Handler:
    assert route.snowplow is not None
    durable = _durable(route, ctx.config)
    return SnowplowHandler(
        route.snowplow, route.match.path_prefix, ctx.tracker, ctx.sink, durable=durable
    )


def _static(route: Route, ctx: BuildContext) -> Handler:
    assert route.static is not None
    return StaticHandler(route.static, route.match.path_prefix, ctx.metrics.static_report())


# What ``gateway check`` prints for a route of each kind.
def _respond_label(route: Route, config: Config) -> str:
    return f"respond {route.respond.status}" if route.respond else ""


def _collect_label(route: Route, config: Config) -> str:
    endpoints = ",".join(route.collect.endpoints) if route.collect else ""
    return f"collect {endpoints} ({_delivery(route, config)})"


def _segment_label(route: Route, config: Config) -> str:
    if route.segment is not None and not route.segment.enabled:
        return "segment API (off: 404)"
    return f"segment API ({_delivery(route, config)})"


def _proxy_label(route: Route, config: Config) -> str:
    if route.proxy is None:
        return ""
    targets = ",".join(url if w == 1 else f"{url}*{w}" for url, w in route.proxy.weighted)
    breaker = " circuit breaker" if route.proxy.circuit_breaker else ""
    cache = ""
    if route.cache is not None:
        cache = " cached" + (
            " (shared on redis)" if config.cache.redis and route.cache.shared else ""
        )
    return f"proxy {targets} ({route.proxy.policy}){breaker}{cache}"


def _static_label(route: Route, config: Config) -> str:
    return f"static {route.static.root}" if route.static else ""


def _intake_label(route: Route, config: Config) -> str:
    users = len(route.intake.users) if route.intake else 0
    return f"rill intake ({_delivery(route, config)}, {users} user(s))"


def _snowplow_label(route: Route, config: Config) -> str:
    return f"snowplow tracker protocol ({_delivery(route, config)})"


def _redirect_label(route: Route, config: Config) -> str:
    adhoc = route.redirect is not None and route.redirect.adhoc
    return "redirect links" + (" and signed ad-hoc /r" if adhoc else "")


KINDS: dict[str, Kind] = {
    "respond": Kind(_respond, _respond_label),
    "collect": Kind(_collect, _collect_label, cors=True),
    "segment": Kind(_segment, _segment_label, cors=True),
    "proxy": Kind(_proxy, _proxy_label),
    "static": Kind(_static, _static_label),
    "redirect": Kind(_redirect, _redirect_label),
    "intake": Kind(_intake, _intake_label),
    "snowplow": Kind(_snowplow, _snowplow_label, cors=True),
}
assert tuple(KINDS) == HANDLER_KINDS, "every handler key of a route has exactly one kind"


def kind_name(route: Route) -> str:
    """The handler key a validated route has set (exactly one): its kind's name."""
    return next(name for name in HANDLER_KINDS if getattr(route, name) is not None)


def kind_of(route: Route) -> Kind:
    """The kind of a validated route."""
    return KINDS[kind_name(route)]
