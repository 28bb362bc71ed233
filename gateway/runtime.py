"""The runtime built from one config: route table and request-path helpers.

A :class:`Runtime` is immutable and complete; a reload builds a new one off to the side
and swaps it in with one assignment, so a request sees either the old or the new config,
never a mix.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clientip import ClientIPResolver
from gateway.config import Config, Route
from gateway.handlers import Handler
from gateway.handlers.respond import RespondHandler
from gateway.router import HostMatcher, Router, RouteRule


@dataclass(frozen=True, slots=True)
class ActiveRoute:
    """A route ready to serve."""

    name: str
    max_body: int
    handler: Handler


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything the request path reads, derived from one :class:`Config`."""

    config: Config
    generation: int
    router: Router[ActiveRoute]
    client_ip: ClientIPResolver


def _handler_for(route: Route) -> Handler:
    if route.respond is not None:
        return RespondHandler(route.respond)
    # parse_config rejects a route without a known handler; reaching here is a bug.
    raise AssertionError(f"route {route.name!r} has no handler")


def build_runtime(config: Config, generation: int = 1) -> Runtime:
    server = config.server
    rules = [
        RouteRule(
            hosts=HostMatcher.of(route.match.hosts),
            path_prefix=route.match.path_prefix,
            target=ActiveRoute(
                name=route.name,
                max_body=route.max_body_bytes
                if route.max_body_bytes is not None
                else server.limits.max_body_bytes,
                handler=_handler_for(route),
            ),
        )
        for route in config.routes
    ]
    return Runtime(
        config=config,
        generation=generation,
        router=Router(rules),
        client_ip=ClientIPResolver(server.trusted_proxies, server.client_ip_header),
    )


class RuntimeHolder:
    """The one mutable cell: which runtime serves new requests."""

    __slots__ = ("current",)

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime

    def swap(self, config: Config) -> Runtime:
        self.current = build_runtime(config, self.current.generation + 1)
        return self.current
