"""The scenario registry: what each benchmark serves, how it is loaded, and whether it can run.

Adding a scenario is one entry in ``SCENARIOS``: a name, a :class:`Site` builder (how the
gateway, nginx and Caddy are configured), the wrk target (path, expected body, Lua script),
and ``pending`` while the gateway feature it needs has not landed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks.configs import Site, respond_site

HELLO_BODY = "Hello from the gateway\n"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark: ``load`` runs wrk for the duration, ``idle`` holds connections open."""

    name: str
    summary: str
    measure: Literal["load", "idle"] = "load"
    # Builds every server's config; gets a directory for fixtures such as static files.
    site: Callable[[Path], Site] | None = None
    path: str = "/"
    expected_body: bytes = b""
    wrk_script: str | None = None  # Lua for wrk -s (POST bodies, batches)
    events_per_request: int = 1  # tracking events one request carries
    pending: str | None = None  # why it cannot run yet: the gateway feature it needs

    def __post_init__(self) -> None:
        if self.pending is None and self.site is None:
            raise ValueError(f"scenario {self.name}: runnable, so it needs a site")


def _hello(_: Path) -> Site:
    return respond_site(HELLO_BODY)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "hello",
        "a fixed response from memory: gateway respond, nginx return, Caddy respond",
        site=_hello,
        expected_body=HELLO_BODY.encode(),
    ),
    Scenario(
        "proxy_small",
        "reverse proxy to a loopback upstream, small response",
        pending="proxy handler not built yet",
    ),
    Scenario(
        "proxy_1m",
        "reverse proxy to a loopback upstream, 1 MiB response",
        pending="proxy handler not built yet",
    ),
    Scenario("static_1k", "a 1 KiB static file", pending="static handler not built yet"),
    Scenario("static_1m", "a 1 MiB static file", pending="static handler not built yet"),
    Scenario(
        "pixel",
        "tracking pixel: a GIF answered after enqueueing an event",
        pending="tracking not built yet",
    ),
    Scenario(
        "tracker_post",
        "durable tracker POST: a JSON event accepted into the Kafka/disk pipeline",
        pending="tracking not built yet",
    ),
    Scenario(
        "segment_batch",
        "Segment-style batch POST of many events per request",
        events_per_request=100,  # the planned batch size
        pending="tracking not built yet",
    ),
    Scenario("redirect", "a redirect link answered 302", pending="redirect handler not built yet"),
    Scenario(
        "idle_10k",
        "memory per idle keep-alive connection (10,000 connections; 500 in --smoke)",
        measure="idle",
        site=_hello,
        expected_body=HELLO_BODY.encode(),
    ),
)

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def select(names: str | None) -> tuple[Scenario, ...]:
    """The scenarios named in a comma list (all when None), in registry order.

    Raises ``KeyError`` naming the first unknown scenario.
    """
    if names is None:
        return SCENARIOS
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    for name in wanted:
        if name not in BY_NAME:
            raise KeyError(name)
    return tuple(scenario for scenario in SCENARIOS if scenario.name in wanted)
