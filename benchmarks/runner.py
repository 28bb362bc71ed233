"""Run the selected scenarios: each server in turn, round after round, on a fresh process.

A fresh server per run keeps runs independent (no warm caches or freed-but-kept memory
from the previous round); every process started here is stopped before the next starts.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.idle import idle_connections
from benchmarks.load import WrkError, run_wrk, wrk_command
from benchmarks.machine import Tools
from benchmarks.outcomes import (
    Failure,
    IdleResult,
    LoadResult,
    Run,
    ScenarioOutcome,
    summarize,
)
from benchmarks.probe import body_mismatch
from benchmarks.procstat import sample_tree, sampling
from benchmarks.scenarios import Scenario
from benchmarks.servers import RunningServer, ServerError, running
from benchmarks.settings import LABELS, SERVERS, Settings

MIB = 1024 * 1024
# Lets the server finish allocating for the last connections before memory is read.
IDLE_SETTLE = 1.0


async def run_scenarios(
    scenarios: Sequence[Scenario], settings: Settings, tools: Tools
) -> list[ScenarioOutcome]:
    """Every scenario's outcome, in order; skipped ones say why."""
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        for scenario in scenarios:
            if scenario.pending is not None:
                _progress(f"{scenario.name}: skipped ({scenario.pending})")
                outcomes.append(ScenarioOutcome(scenario.name, skipped=scenario.pending))
                continue
            outcomes.append(await _run_scenario(scenario, settings, tools, Path(tmp)))
    return outcomes


async def _run_scenario(
    scenario: Scenario, settings: Settings, tools: Tools, tmp: Path
) -> ScenarioOutcome:
    runs: dict[str, list[Run]] = {server: [] for server in SERVERS}
    for round_number in range(1, settings.rounds + 1):
        for server in SERVERS:
            workdir = tmp / f"{scenario.name}-{server}-{round_number}"
            workdir.mkdir()
            run = await _run_once(scenario, server, settings, tools, workdir)
            _progress(
                f"{scenario.name}: {LABELS[server]} round {round_number}/{settings.rounds}: "
                + _describe(run)
            )
            runs[server].append(run)
    return ScenarioOutcome(
        scenario.name, servers=tuple(summarize(server, runs[server]) for server in SERVERS)
    )


async def _run_once(
    scenario: Scenario, kind: str, settings: Settings, tools: Tools, workdir: Path
) -> Run:
    assert scenario.site is not None, "only runnable scenarios get here"
    site = scenario.site(workdir)
    capacity = settings.capacity(idle=scenario.measure == "idle")
    try:
        async with running(
            kind, site, workers=settings.workers, capacity=capacity, tools=tools, workdir=workdir
        ) as server:
            mismatch = await body_mismatch(server.url(scenario.path), scenario.expected_body)
            if mismatch is not None:
                return Failure(mismatch)
            if scenario.measure == "idle":
                return await _measure_idle(scenario, server, settings)
            return await _measure_load(scenario, server, settings, tools, workdir)
    except ServerError as exc:
        _progress(f"{exc}; last lines of its output:\n{exc.log_tail}")
        return Failure(str(exc))
    except WrkError as exc:
        return Failure(str(exc))


async def _measure_load(
    scenario: Scenario, server: RunningServer, settings: Settings, tools: Tools, workdir: Path
) -> Run:
    script = None
    if scenario.wrk_script is not None:
        script = workdir / "load.lua"
        script.write_text(scenario.wrk_script)
    command = wrk_command(
        tools.wrk,
        server.url(scenario.path),
        connections=settings.connections,
        duration=settings.duration,
        script=script,
    )
    async with sampling(server.pid) as usage:
        stats = await run_wrk(command, duration=settings.duration)
    return LoadResult(
        requests_per_s=stats.requests_per_s,
        p50_ms=stats.p50_ms,
        p99_ms=stats.p99_ms,
        errors=stats.errors,
        cpu_cores=usage.cores,
        peak_rss_mib=usage.peak_rss_bytes / MIB,
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


def _describe(run: Run) -> str:
    if isinstance(run, LoadResult):
        return (
            f"{run.requests_per_s:,.0f} req/s, p99 {run.p99_ms:.2f} ms, "
            f"{run.errors} errors, {run.cpu_cores:.2f} cores"
        )
    if isinstance(run, IdleResult):
        kib = run.kib_per_connection
        each = "n/a" if kib is None else f"{kib:.1f}"
        return f"{run.opened} idle connections, {each} KiB each, {run.errors} failed"
    return f"FAILED: {run.reason}"


def _progress(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)
