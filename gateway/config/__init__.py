"""The config: typed, frozen models per capability, their checks, and loading.

Loading validates everything up front and reports every problem with its key path
(``routes[1].match.path_prefix: must start with "/"``), so ``gateway check`` can explain a
broken file in one go. Nothing mutates a loaded :class:`Config`; a reload builds a new one
and swaps it whole. Each capability's models sit in a module of their own, with the checks
that span keys beside them (``checks``); ``root`` holds the whole document."""

from __future__ import annotations

from gateway.config.base import ConfigError, ConfigIssue, Name
from gateway.config.cache import Cache, CacheKey, CacheRedis, RouteCache
from gateway.config.events import (
    EVENT_TYPES,
    Cookie,
    Cookies,
    Cors,
    Kafka,
    KafkaSasl,
    KafkaTls,
    Spool,
    Tracking,
)
from gateway.config.limits import LocalBackend, RateLimitRule, RateLimits, RedisBackend
from gateway.config.links import RedirectRoute, Redirects
from gateway.config.load import load_config, parse_config
from gateway.config.proxy import (
    ActiveHealth,
    CircuitBreaker,
    PassiveHealth,
    Proxy,
    ProxyTimeouts,
    WeightedUpstream,
)
from gateway.config.root import Config
from gateway.config.routes import (
    HANDLER_KINDS,
    SNOWPLOW_TP2,
    Collect,
    Intake,
    IntakeUser,
    Match,
    Respond,
    Route,
    Segment,
    Snowplow,
)
from gateway.config.server import (
    AccessLog,
    Http2,
    Limits,
    Listener,
    Server,
    Timeouts,
    TraceContext,
)
from gateway.config.static import CacheControlRule, Static, StaticCache
from gateway.config.tls import (
    Acme,
    AcmeDns,
    AcmeDnsTsig,
    AcmeEab,
    AcmeOnDemand,
    AcmeShared,
    Hsts,
    Tls,
    TlsCertificate,
)

__all__ = [
    "EVENT_TYPES",
    "HANDLER_KINDS",
    "SNOWPLOW_TP2",
    "AccessLog",
    "Acme",
    "AcmeDns",
    "AcmeDnsTsig",
    "AcmeEab",
    "AcmeOnDemand",
    "AcmeShared",
    "ActiveHealth",
    "Cache",
    "CacheControlRule",
    "CacheKey",
    "CacheRedis",
    "CircuitBreaker",
    "Collect",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Cookie",
    "Cookies",
    "Cors",
    "Hsts",
    "Http2",
    "Intake",
    "IntakeUser",
    "Kafka",
    "KafkaSasl",
    "KafkaTls",
    "Limits",
    "Listener",
    "LocalBackend",
    "Match",
    "Name",
    "PassiveHealth",
    "Proxy",
    "ProxyTimeouts",
    "RateLimitRule",
    "RateLimits",
    "RedirectRoute",
    "Redirects",
    "RedisBackend",
    "Respond",
    "Route",
    "RouteCache",
    "Segment",
    "Server",
    "Snowplow",
    "Spool",
    "Static",
    "StaticCache",
    "Timeouts",
    "Tls",
    "TlsCertificate",
    "TraceContext",
    "Tracking",
    "WeightedUpstream",
    "load_config",
    "parse_config",
]
