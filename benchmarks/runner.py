"""Run the selected scenarios: each server in turn, round after round, on a fresh process.

A fresh server per run keeps runs independent (no warm caches or freed-but-kept memory
from the previous round); every process started here is stopped before the next starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from benchmarks.broker import (
    Broker,
    CountError,
    RecordCounter,
    apache_kafka,
    record_counter,
    settle,
    tansu,
)
from benchmarks.configs import EVENTS_TOPIC
from benchmarks.fixtures import Fixtures, prepared, work_directory
from benchmarks.h2load import STREAMS, h2load_command, run_h2load
from benchmarks.idle import idle_connections
from benchmarks.load import WrkError, run_wrk, wrk_command
from benchmarks.machine import Tools
from benchmarks.outcomes import (
    Failure,
    FootprintResult,
    IdleResult,
    LoadResult,
    Run,
    ScenarioOutcome,
    delivery,
    summarize,
)
from benchmarks.probe import answer_mismatch
from benchmarks.procstat import PAGE_SIZE, Usage, sample_tree, sampling
from benchmarks.scenarios import Scenario
from benchmarks.servers import RunningServer, ServerError, running
from benchmarks.settings import EVERYWHERE, LABELS, SERVERS, Settings, capacity

MIB = 1024 * 1024
# Lets the server finish allocating for the last connections before memory is read.
IDLE_SETTLE = 1.0


async def run_scenarios(
    scenarios: Sequence[Scenario], settings: Settings, tools: Tools
) -> list[ScenarioOutcome]:
    """Every scenario's outcome, in order; skipped ones say why."""
    outcomes = []
    with work_directory() as tmp:
        for scenario in scenarios:
            if scenario.pending is not None:
                _progress(f"{scenario.name}: skipped ({scenario.pending})")
                outcomes.append(ScenarioOutcome(scenario.name, skipped=scenario.pending))
                continue
            outcomes.append(await _run_scenario(scenario, settings, tools, tmp))
    return outcomes


async def _run_scenario(
    scenario: Scenario, settings: Settings, tools: Tools, tmp: Path
) -> ScenarioOutcome:
    runs: dict[str, list[Run]] = {}
    try:
        async with prepared(
            tmp / f"{scenario.name}-shared",
            backend=scenario.backend,
            tools=tools,
            workers=settings.workers,
            # Each request in flight at the server under test leads to at most one here.
            capacity=capacity(scenario.clients(settings) * (STREAMS if scenario.http2 else 1)),
            redis=scenario.redis,
        ) as fixtures:
            mismatch = await _backend_mismatch(scenario, fixtures)
            if mismatch is not None:
                return _failed(scenario, mismatch)
            runs = {server: [] for server in servers_of(scenario, fixtures)}
            for round_number in range(1, settings.rounds + 1):
                for server in runs:
                    workdir = tmp / f"{scenario.name}-{server}-{round_number}"
                    workdir.mkdir()
                    run = await _run_once(scenario, server, settings, tools, workdir, fixtures)
                    _progress(
                        f"{scenario.name}: {LABELS[server]} round {round_number}/"
                        f"{settings.rounds}: " + _describe(run)
                    )
                    runs[server].append(run)
    except ServerError as exc:
        _progress(f"backend: {exc}; last lines of its output:\n{exc.log_tail}")
        return _failed(scenario, f"backend: {exc}")
    return ScenarioOutcome(
        scenario.name,
        servers=tuple(summarize(server, server_runs) for server, server_runs in runs.items()),
    )


def servers_of(scenario: Scenario, fixtures: Fixtures) -> tuple[str, ...]:
    """The servers a scenario compares: all but nginx+log, which only some sites have;
    the gateway alone for its footprint."""
    assert scenario.site is not None, "only runnable scenarios get here"
    if scenario.measure == "footprint":
        return ("gateway",)
    site = scenario.site(fixtures)
    optional = {"nginx_log": site.nginx_log_locations, "varnish": site.varnish_vcl}
    return tuple(server for server in SERVERS if optional.get(server, "") is not None)


async def _backend_mismatch(scenario: Scenario, fixtures: Fixtures) -> str | None:
    """Whether the backend itself answers what the proxies must pass on, byte for byte."""
    if fixtures.backend is None:
        return None
    mismatch = await answer_mismatch(
        f"http://{fixtures.backend}{scenario.path}", expected=scenario.expected_body
    )
    return None if mismatch is None else f"backend {mismatch}"


def _failed(scenario: Scenario, reason: str) -> ScenarioOutcome:
    """A scenario no server could be measured in, such as when its backend did not start."""
    _progress(f"{scenario.name}: FAILED: {reason}")
    return ScenarioOutcome(
        scenario.name,
        servers=tuple(summarize(server, [Failure(reason)]) for server in EVERYWHERE),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Kafka:
    """The broker a tracking run's gateway sends to, and the count of what arrived."""

    broker: Broker
    counter: RecordCounter


@contextlib.asynccontextmanager
async def _kafka(workdir: Path, kind: str) -> AsyncIterator[_Kafka]:
    starting = apache_kafka(workdir) if kind == "kafka" else tansu(workdir)
    async with starting as broker, record_counter(broker.bootstrap, EVENTS_TOPIC) as counter:
        yield _Kafka(broker, counter)


async def _run_once(
    scenario: Scenario,
    kind: str,
    settings: Settings,
    tools: Tools,
    workdir: Path,
    fixtures: Fixtures,
) -> Run:
    assert scenario.site is not None, "only runnable scenarios get here"
    site = scenario.site(fixtures)
    if scenario.tls:
        site = dataclasses.replace(site, tls=fixtures.certificate)
    try:
        # Exits in reverse: the gateway stops (flushing its events) before the broker does.
        async with contextlib.AsyncExitStack() as stack:
            kafka = None
            if kind == "gateway" and scenario.events_per_request > 0:
                kafka = await stack.enter_async_context(_kafka(workdir, settings.broker))
            server = await stack.enter_async_context(
                running(
                    kind,
                    site,
                    workers=settings.workers,
                    # Over HTTP/2 each connection carries up to STREAMS requests at once.
                    capacity=capacity(
                        scenario.clients(settings) * (STREAMS if scenario.http2 else 1),
                        proxied=scenario.backend,
                    ),
                    tools=tools,
                    workdir=workdir,
                    kafka=kafka.broker.bootstrap if kafka else None,
                )
            )
            mismatch = await answer_mismatch(
                server.url(scenario.path),
                method=scenario.method,
                body=scenario.body or None,
                headers=scenario.headers,
                status=scenario.status,
                expected=scenario.expected_body_for(kind),
                expected_headers=scenario.expected_headers,
            )
            if mismatch is not None:
                return Failure(mismatch)
            if scenario.measure == "idle":
                return await _measure_idle(scenario, server, settings)
            if scenario.measure == "footprint":
                return await _measure_footprint(server)
            return await _measure_load(scenario, server, settings, tools, workdir, kafka)
    except ServerError as exc:
        _progress(f"{exc}; last lines of its output:\n{exc.log_tail}")
        return Failure(str(exc))
    except (WrkError, CountError) as exc:
        return Failure(str(exc))


WARMUP_S = 3  # seconds of load before a visitor-mix scenario is measured


async def _measure_load(
    scenario: Scenario,
    server: RunningServer,
    settings: Settings,
    tools: Tools,
    workdir: Path,
    kafka: _Kafka | None,
) -> Run:
    script = None
    if scenario.wrk_script is not None:
        script = workdir / "load.lua"
        script.write_text(scenario.wrk_script)
    log = workdir / "h2load.log"
    if scenario.http2:
        body = None
        if scenario.body:
            body = workdir / "body.bin"
            body.write_bytes(scenario.body)
        command = h2load_command(
            tools.h2load,
            server.url(scenario.path),
            connections=scenario.clients(settings),
            duration=settings.duration,
            log=log,
            script=body,
        )
    else:
        command = wrk_command(
            tools.wrk,
            server.url(scenario.path),
            connections=scenario.clients(settings),
            duration=settings.duration,
            script=script,
        )
    answered = 1  # the answer check sent one request
    if scenario.mix and not scenario.http2:
        # A visitor mix warms what the servers keep per visitor (the gateway's parsed
        # agents and looked-up addresses): measured warm, as a long-running server is.
        warm = wrk_command(tools.wrk, server.url(scenario.path), duration=WARMUP_S,
                           connections=scenario.clients(settings), script=script)  # fmt: skip
        answered += (await run_wrk(warm, duration=WARMUP_S)).successes
    baseline = 0
    if kafka is not None:
        # The answer check's and warm-up's events: counted before the load, not in it.
        baseline = (await settle(kafka.counter.count, answered * scenario.events_per_request)).count
    async with contextlib.AsyncExitStack() as stack:
        usage = await stack.enter_async_context(sampling(server.pid))
        broker_usage: Usage | None = None
        if kafka is not None:
            broker_usage = await stack.enter_async_context(sampling(kafka.broker.pid))
        if scenario.http2:
            stats = await run_h2load(command, duration=settings.duration, log=log)
        else:
            stats = await run_wrk(command, duration=settings.duration)
    result = LoadResult(
        requests_per_s=stats.requests_per_s,
        p50_ms=stats.p50_ms,
        p99_ms=stats.p99_ms,
        errors=stats.errors,
        cpu_cores=usage.cores,
        peak_rss_mib=usage.peak_rss_bytes / MIB,
    )
    if kafka is None or broker_usage is None:
        return result
    expected = stats.successes * scenario.events_per_request
    settled = await settle(kafka.counter.count, baseline + expected)
    return dataclasses.replace(
        result,
        delivery=delivery(
            expected=expected,
            delivered=settled.count - baseline,
            load_s=stats.seconds,
            drain_s=settled.seconds,
            broker_cores=broker_usage.cores,
        ),
    )


async def _measure_idle(scenario: Scenario, server: RunningServer, settings: Settings) -> Run:
    before = sample_tree(server.pid).rss_bytes
    async with idle_connections(server.port, scenario.path, settings.idle_connections) as pool:
        await asyncio.sleep(IDLE_SETTLE)
        after = sample_tree(server.pid).rss_bytes
    if pool.first_error is not None:
        _progress(f"{pool.failed} connections failed, the first with {pool.first_error}")
    return IdleResult(
        kib_per_connection=(after - before) / 1024 / pool.opened if pool.opened else None,
        opened=pool.opened,
        errors=pool.failed,
        rss_mib=after / MIB,
    )


async def _measure_footprint(server: RunningServer) -> Run:
    await asyncio.sleep(IDLE_SETTLE)
    processes = sample_tree(server.pid).processes
    workers = [stat.rss_pages for pid, stat in processes.items() if pid != server.pid]
    if server.pid not in processes or not workers:
        return Failure("the supervisor or its workers were gone")
    return FootprintResult(
        worker_rss_mib=max(workers) * PAGE_SIZE / MIB,
        supervisor_rss_mib=processes[server.pid].rss_pages * PAGE_SIZE / MIB,
        workers=len(workers),
    )


def _describe(run: Run) -> str:
    if isinstance(run, LoadResult):
        text = (
            f"{run.requests_per_s:,.0f} req/s, p99 {run.p99_ms:.2f} ms, "
            f"{run.errors} errors, {run.cpu_cores:.2f} cores"
        )
        if run.delivery is not None:
            events = run.delivery
            text += (
                f"; {events.delivered:,} of {events.expected:,} events in Kafka "
                f"({events.events_per_s:,.0f}/s, shortfall {events.shortfall:,})"
            )
        return text
    if isinstance(run, FootprintResult):
        return (
            f"{run.workers} workers, {run.worker_rss_mib:.1f} MiB each at most, "
            f"supervisor {run.supervisor_rss_mib:.1f} MiB"
        )
    if isinstance(run, IdleResult):
        kib = run.kib_per_connection
        each = "n/a" if kib is None else f"{kib:.1f}"
        return f"{run.opened} idle connections, {each} KiB each, {run.errors} failed"
    return f"FAILED: {run.reason}"


def _progress(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)
