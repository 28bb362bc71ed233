"""The performance targets from the project's issue, evaluated on a run (reported, not asserted)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from benchmarks.outcomes import (
    LoadResult,
    Measured,
    ScenarioOutcome,
    events_per_s,
    kib_per_connection,
    ratio,
    requests_per_s,
    worker_rss_mib,
)
from benchmarks.settings import LABELS, Settings

Outcomes = Mapping[str, ScenarioOutcome]


class _NotMeasured(Exception):
    """A figure a target needs is missing; the message says why (not run, skipped, failed)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A goal, the scenario it is about, and how to measure it: ``(text, met)``."""

    goal: str
    scenario: str
    check: Callable[[str, Outcomes, Settings], tuple[str, bool]]


@dataclass(frozen=True, slots=True)
class TargetRow:
    """A target's line in the report; ``met`` is None when it could not be measured."""

    goal: str
    scenario: str
    measured: str
    met: bool | None


def _gateway_result(outcomes: Outcomes, name: str) -> Measured | None:
    outcome = outcomes.get(name)
    if outcome is None:
        raise _NotMeasured(f"{name} not run")
    if outcome.skipped is not None:
        raise _NotMeasured("skipped")
    return outcome.median("gateway")


def _gateway_figure(
    outcomes: Outcomes, name: str, figure: Callable[[Measured | None], float | None]
) -> float:
    value = figure(_gateway_result(outcomes, name))
    if value is None:
        raise _NotMeasured("gateway failed")
    return value


def _missing_events(outcomes: Outcomes, name: str) -> int:
    """Events the gateway answered 2xx/3xx for that never reached Kafka (0 without tracking)."""
    result = _gateway_result(outcomes, name)
    if isinstance(result, LoadResult) and result.delivery is not None:
        return result.delivery.shortfall
    return 0


def _with_missing(outcomes: Outcomes, name: str, measured: str, met: bool) -> tuple[str, bool]:
    """A throughput that lost answered events does not meet its target."""
    missing = _missing_events(outcomes, name)
    if missing:
        return f"{measured}, {missing:,} events missing", False
    return measured, met


def _versus_servers(
    name: str,
    outcomes: Outcomes,
    _: Settings,
    *,
    minimums: Mapping[str, float],
    p99_within_caddy: bool = False,
) -> tuple[str, bool]:
    """The gateway's requests/s over each named peer's, each at least its minimum."""
    gateway = _gateway_figure(outcomes, name, requests_per_s)
    outcome = outcomes[name]
    parts, met = [], True
    for server, minimum in minimums.items():
        times = ratio(gateway, requests_per_s(outcome.median(server)))
        if times is None:
            raise _NotMeasured(f"{LABELS[server]} failed or not run")
        parts.append(f"{times:.2f}x {LABELS[server]}")
        met = met and times >= minimum
    if p99_within_caddy:
        ours, theirs = outcome.median("gateway"), outcome.median("caddy")
        # Both answered load, or their requests/s above would have been missing.
        assert isinstance(ours, LoadResult) and isinstance(theirs, LoadResult)
        parts.append(f"p99 {ours.p99_ms:.2f} vs {theirs.p99_ms:.2f} ms Caddy")
        met = met and ours.p99_ms <= theirs.p99_ms
    return _with_missing(outcomes, name, ", ".join(parts), met)


def _versus_hello(
    name: str,
    outcomes: Outcomes,
    _: Settings,
    *,
    minimum: float,
    max_p50_ms: float | None = None,
) -> tuple[str, bool]:
    hello = _gateway_figure(outcomes, "hello", requests_per_s)
    times = ratio(_gateway_figure(outcomes, name, requests_per_s), hello)
    if times is None:
        raise _NotMeasured("hello answered nothing")
    measured, met = f"{times:.2f}x hello", times >= minimum
    if max_p50_ms is not None:
        result = _gateway_result(outcomes, name)
        assert isinstance(result, LoadResult), "it has requests/s"
        measured += f", p50 {result.p50_ms:.2f} ms"
        met = met and result.p50_ms <= max_p50_ms
    return _with_missing(outcomes, name, measured, met)


def _versus_scenario(
    name: str, outcomes: Outcomes, _: Settings, *, other: str, minimum: float
) -> tuple[str, bool]:
    """The gateway's requests/s in one scenario over its own in another."""
    times = ratio(
        _gateway_figure(outcomes, name, requests_per_s),
        _gateway_figure(outcomes, other, requests_per_s),
    )
    if times is None:
        raise _NotMeasured(f"{other} answered nothing")
    return f"{times:.2f}x {other}", times >= minimum


def _cpu_added(
    name: str, outcomes: Outcomes, _: Settings, *, other: str, maximum: float
) -> tuple[str, bool]:
    """The gateway's CPU µs per request in one scenario less that in another."""
    costs = []
    for scenario in (name, other):
        result = _gateway_result(outcomes, scenario)
        if not isinstance(result, LoadResult) or not result.requests_per_s:
            raise _NotMeasured(f"{scenario}: gateway failed")
        costs.append(result.cpu_cores * 1e6 / result.requests_per_s)
    added = costs[0] - costs[1]
    return f"{added:+.1f} µs/req over {other}", added <= maximum


def _events_versus_hello(
    name: str, outcomes: Outcomes, _: Settings, *, minimum: float
) -> tuple[str, bool]:
    """Events that reached Kafka per second over hello's requests per second."""
    hello = _gateway_figure(outcomes, "hello", requests_per_s)
    times = ratio(_gateway_figure(outcomes, name, events_per_s), hello)
    if times is None:
        raise _NotMeasured("hello answered nothing")
    return _with_missing(outcomes, name, f"events/s {times:.2f}x hello's req/s", times >= minimum)


def _events_per_worker(
    name: str, outcomes: Outcomes, settings: Settings, *, minimum: float
) -> tuple[str, bool]:
    """Events that reached Kafka per second, per worker: what the batch endpoint delivers."""
    events = _gateway_figure(outcomes, name, events_per_s) / settings.workers
    return _with_missing(outcomes, name, f"{events:,.0f} events/s per worker", events >= minimum)


def _at_most(
    name: str,
    outcomes: Outcomes,
    _: Settings,
    *,
    figure: Callable[[Measured | None], float | None],
    unit: str,
    maximum: float,
) -> tuple[str, bool]:
    value = _gateway_figure(outcomes, name, figure)
    return f"{value:.1f} {unit}", value <= maximum


_PROXY = "proxy ≥ 1.3x Caddy, p99 ≤ Caddy's"
_versus_proxies = functools.partial(_versus_servers, minimums={"caddy": 1.3}, p99_within_caddy=True)
TARGETS = (
    Target(_PROXY, "proxy_small", _versus_proxies),
    Target(_PROXY, "proxy_small_c1000", _versus_proxies),
    Target(_PROXY, "proxy_1m", _versus_proxies),
    Target(
        "cached proxy ≥ 1.3x Caddy's proxying",
        "proxy_cached",
        functools.partial(_versus_servers, minimums={"caddy": 1.3}),
    ),
    Target(
        "cached proxy ≥ 1.0x the gateway's own static 1 KiB",
        "proxy_cached",
        functools.partial(_versus_scenario, other="static_1k", minimum=1.0),
    ),
    Target(
        "a proxied request in an experiment ≤ 10 µs more CPU than outside it",
        "proxy_experiment",
        functools.partial(_cpu_added, other="proxy_visitor", maximum=10.0),
    ),
    Target(
        "static 1 KiB ≥ 1.0x Caddy",
        "static_1k",
        functools.partial(_versus_servers, minimums={"caddy": 1.0}),
    ),
    Target("pixel ≥ 0.75x hello world", "pixel", functools.partial(_versus_hello, minimum=0.75)),
    Target(
        "pixel ≥ 0.3x nginx+log (nginx answering and recording each hit)",
        "pixel",
        functools.partial(_versus_servers, minimums={"nginx_log": 0.3}),
    ),
    Target(
        "enriched pixel ≥ 0.9x the same visitor mix without enrichment",
        "pixel_enriched",
        functools.partial(_versus_scenario, other="pixel_mix", minimum=0.9),
    ),
    Target(
        "enrichment (every step, warm) ≤ 10 µs CPU per event",
        "pixel_enriched",
        functools.partial(_cpu_added, other="pixel_mix", maximum=10.0),
    ),
    Target(
        "durable tracker POST ≥ 0.5x hello world, p50 ≤ 3 ms",
        "tracker_post",
        functools.partial(_versus_hello, minimum=0.5, max_p50_ms=3.0),
    ),
    Target(
        "durable Segment batch of 100: events/s ≥ 4x hello's requests/s",
        "segment_batch",
        functools.partial(_events_versus_hello, minimum=4.0),
    ),
    *(
        Target(
            "≥ 50k events/s per worker via batch",
            name,
            functools.partial(_events_per_worker, minimum=50_000),
        )
        for name in ("intake_batch", "snowplow_tp2")
    ),
    Target(
        "redirect ≥ 0.75x hello world",
        "redirect",
        functools.partial(_versus_hello, minimum=0.75),
    ),
    Target(
        "≤ 50 KiB RSS per idle connection",
        "idle_10k",
        functools.partial(_at_most, figure=kib_per_connection, unit="KiB", maximum=50),
    ),
    Target(
        "idle worker ≤ 45 MiB RSS with the shipped config",
        "worker_rss",
        functools.partial(_at_most, figure=worker_rss_mib, unit="MiB", maximum=45),
    ),
)


def evaluate(outcomes: Sequence[ScenarioOutcome], settings: Settings) -> list[TargetRow]:
    """Every target with what this run measured for it, or why it could not be measured."""
    by_name = {outcome.name: outcome for outcome in outcomes}
    rows = []
    for target in TARGETS:
        try:
            measured, met = target.check(target.scenario, by_name, settings)
        except _NotMeasured as missing:
            rows.append(TargetRow(target.goal, target.scenario, str(missing), None))
        else:
            rows.append(TargetRow(target.goal, target.scenario, measured, met))
    return rows
