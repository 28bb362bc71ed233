"""The performance targets from the project's issue, evaluated on a run (reported, not asserted)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from benchmarks.outcomes import (
    IdleResult,
    LoadResult,
    ScenarioOutcome,
    events_per_s,
    kib_per_connection,
    ratio,
    requests_per_s,
)
from benchmarks.settings import Settings

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


def _gateway_result(outcomes: Outcomes, name: str) -> LoadResult | IdleResult | None:
    outcome = outcomes.get(name)
    if outcome is None:
        raise _NotMeasured(f"{name} not run")
    if outcome.skipped is not None:
        raise _NotMeasured("skipped")
    return outcome.median("gateway")


def _gateway_figure(outcomes: Outcomes, name: str, *, idle: bool = False) -> float:
    result = _gateway_result(outcomes, name)
    figure = kib_per_connection(result) if idle else requests_per_s(result)
    if figure is None:
        raise _NotMeasured("gateway failed")
    return figure


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
    caddy: float,
    nginx: float | None = None,
    p99_within_caddy: bool = False,
) -> tuple[str, bool]:
    gateway = _gateway_figure(outcomes, name)
    outcome = outcomes[name]
    versus = {"Caddy": (outcome.median("caddy"), caddy), "nginx": (outcome.median("nginx"), nginx)}
    parts, met = [], True
    for label, (result, minimum) in versus.items():
        if minimum is None:
            continue
        times = ratio(gateway, requests_per_s(result))
        if times is None:
            raise _NotMeasured(f"{label} failed")
        parts.append(f"{times:.2f}x {label}")
        met = met and times >= minimum
    if p99_within_caddy:
        ours, theirs = outcome.median("gateway"), outcome.median("caddy")
        # Both answered load, or their requests/s above would have been missing.
        assert isinstance(ours, LoadResult) and isinstance(theirs, LoadResult)
        parts.append(f"p99 {ours.p99_ms:.2f} vs {theirs.p99_ms:.2f} ms Caddy")
        met = met and ours.p99_ms <= theirs.p99_ms
    return ", ".join(parts), met


def _versus_hello(
    name: str, outcomes: Outcomes, _: Settings, *, minimum: float
) -> tuple[str, bool]:
    times = ratio(_gateway_figure(outcomes, name), _gateway_figure(outcomes, "hello"))
    if times is None:
        raise _NotMeasured("hello answered nothing")
    return _with_missing(outcomes, name, f"{times:.2f}x hello", times >= minimum)


def _events_per_worker(
    name: str, outcomes: Outcomes, settings: Settings, *, minimum: float
) -> tuple[str, bool]:
    """Events that reached Kafka per second, per worker: what the batch endpoint delivers."""
    delivered = events_per_s(_gateway_result(outcomes, name))
    if delivered is None:
        raise _NotMeasured("gateway failed")
    events = delivered / settings.workers
    return _with_missing(outcomes, name, f"{events:,.0f} events/s per worker", events >= minimum)


def _idle_kib(name: str, outcomes: Outcomes, _: Settings, *, maximum: float) -> tuple[str, bool]:
    kib = _gateway_figure(outcomes, name, idle=True)
    return f"{kib:.1f} KiB", kib <= maximum


_PROXY = "proxy ≥ 1.5x Caddy and ≥ 0.5x nginx, p99 ≤ Caddy's"
_versus_proxies = functools.partial(_versus_servers, caddy=1.5, nginx=0.5, p99_within_caddy=True)
TARGETS = (
    Target(_PROXY, "proxy_small", _versus_proxies),
    Target(_PROXY, "proxy_small_c1000", _versus_proxies),
    Target(_PROXY, "proxy_1m", _versus_proxies),
    Target("static 1 KiB ≥ 1.0x Caddy", "static_1k", functools.partial(_versus_servers, caddy=1.0)),
    Target("pixel ≥ 0.9x hello world", "pixel", functools.partial(_versus_hello, minimum=0.9)),
    Target(
        "durable tracker POST ≥ 0.8x hello world",
        "tracker_post",
        functools.partial(_versus_hello, minimum=0.8),
    ),
    *(
        Target(
            "≥ 50k events/s per worker via batch",
            name,
            functools.partial(_events_per_worker, minimum=50_000),
        )
        for name in ("segment_batch", "intake_batch", "snowplow_tp2")
    ),
    Target(
        "redirect ≥ 0.9x hello world", "redirect", functools.partial(_versus_hello, minimum=0.9)
    ),
    Target(
        "≤ 50 KiB RSS per idle connection", "idle_10k", functools.partial(_idle_kib, maximum=50)
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
