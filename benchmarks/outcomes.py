"""What a scenario produced: one result per run, and the per-server medians over rounds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delivery:
    """A tracking run's events: what the gateway's 2xx/3xx answers promised, what reached Kafka."""

    expected: int  # 2xx/3xx answers x events per request
    delivered: int  # records that reached the topic
    shortfall: int  # promised but not in Kafka; a durable 2xx must never be missing
    events_per_s: float  # delivered over the load and the drain after it
    drain_s: float  # from the end of the load until the last record arrived
    broker_cores: float  # the broker's CPU during the load (it shares the machine)


def delivery(
    *, expected: int, delivered: int, load_s: float, drain_s: float, broker_cores: float
) -> Delivery:
    """One run's :class:`Delivery`. Requests still in flight when wrk stops are answered
    but not counted by wrk, so ``delivered`` may exceed ``expected``: that is no shortfall."""
    elapsed = load_s + drain_s
    return Delivery(
        expected=expected,
        delivered=delivered,
        shortfall=max(0, expected - delivered),
        events_per_s=delivered / elapsed if elapsed > 0 else 0.0,
        drain_s=drain_s,
        broker_cores=broker_cores,
    )


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One wrk run against one server, with the server tree's CPU and memory meanwhile."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx responses + socket errors
    cpu_cores: float
    peak_rss_mib: float
    delivery: Delivery | None = None  # tracking scenarios on the gateway


@dataclass(frozen=True, slots=True)
class IdleResult:
    """One idle-connection hold: what the server tree grew by per connection."""

    kib_per_connection: float | None  # None when no connection opened
    opened: int
    errors: int  # connections that could not be opened
    rss_mib: float  # with every connection open


@dataclass(frozen=True, slots=True)
class FootprintResult:
    """The gateway serving its shipped config, idle after one request: what a worker holds."""

    worker_rss_mib: float  # the largest worker's RSS
    supervisor_rss_mib: float
    workers: int


@dataclass(frozen=True, slots=True)
class Failure:
    """A run that produced no figures: a server that did not start, a wrong body, wrk failing."""

    reason: str


Measured = LoadResult | IdleResult | FootprintResult
Run = Measured | Failure


@dataclass(frozen=True, slots=True)
class ServerSummary:
    """One server's runs in a scenario: medians of the good ones, and why others failed."""

    server: str
    median: Measured | None  # None when every run failed
    runs: int
    failures: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScenarioOutcome:
    """A scenario's per-server summaries, or why it was skipped."""

    name: str
    skipped: str | None = None
    servers: tuple[ServerSummary, ...] = ()

    def median(self, server: str) -> Measured | None:
        for summary in self.servers:
            if summary.server == server:
                return summary.median
        return None


def summarize(server: str, runs: Sequence[Run]) -> ServerSummary:
    """Medians over the successful runs; errors are summed, since any error matters."""
    loads = [run for run in runs if isinstance(run, LoadResult)]
    idles = [run for run in runs if isinstance(run, IdleResult)]
    footprints = [run for run in runs if isinstance(run, FootprintResult)]
    failures = tuple(run.reason for run in runs if isinstance(run, Failure))
    median: Measured | None = None
    if loads:
        median = LoadResult(
            requests_per_s=statistics.median(r.requests_per_s for r in loads),
            p50_ms=statistics.median(r.p50_ms for r in loads),
            p99_ms=statistics.median(r.p99_ms for r in loads),
            errors=sum(r.errors for r in loads),
            cpu_cores=statistics.median(r.cpu_cores for r in loads),
            peak_rss_mib=statistics.median(r.peak_rss_mib for r in loads),
            delivery=_summarize_deliveries([r.delivery for r in loads if r.delivery]),
        )
    elif idles:
        per_connection = [r.kib_per_connection for r in idles if r.kib_per_connection is not None]
        median = IdleResult(
            kib_per_connection=statistics.median(per_connection) if per_connection else None,
            opened=min(r.opened for r in idles),
            errors=sum(r.errors for r in idles),
            rss_mib=statistics.median(r.rss_mib for r in idles),
        )
    elif footprints:
        median = FootprintResult(
            worker_rss_mib=statistics.median(r.worker_rss_mib for r in footprints),
            supervisor_rss_mib=statistics.median(r.supervisor_rss_mib for r in footprints),
            workers=min(r.workers for r in footprints),
        )
    return ServerSummary(server, median, len(runs), failures)


def _summarize_deliveries(runs: Sequence[Delivery]) -> Delivery | None:
    """Counts summed (a shortfall in any round counts), rates and times as medians."""
    if not runs:
        return None
    return Delivery(
        expected=sum(r.expected for r in runs),
        delivered=sum(r.delivered for r in runs),
        shortfall=sum(r.shortfall for r in runs),
        events_per_s=statistics.median(r.events_per_s for r in runs),
        drain_s=statistics.median(r.drain_s for r in runs),
        broker_cores=statistics.median(r.broker_cores for r in runs),
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def requests_per_s(result: Measured | None) -> float | None:
    """The requests/s of a load result; None for anything else."""
    return result.requests_per_s if isinstance(result, LoadResult) else None


def events_per_s(result: Measured | None) -> float | None:
    """The events/s that reached Kafka in a tracking run; None for anything else."""
    if isinstance(result, LoadResult) and result.delivery is not None:
        return result.delivery.events_per_s
    return None


def kib_per_connection(result: Measured | None) -> float | None:
    """The KiB per idle connection of an idle result; None for anything else."""
    return result.kib_per_connection if isinstance(result, IdleResult) else None


def worker_rss_mib(result: Measured | None) -> float | None:
    """An idle worker's RSS in a footprint result; None for anything else."""
    return result.worker_rss_mib if isinstance(result, FootprintResult) else None
