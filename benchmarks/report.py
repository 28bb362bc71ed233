"""The Markdown report: machine, settings, results, event delivery, ratios and targets.

Rendering is pure (results in, text out) so the exact layout is tested without running a load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from benchmarks.machine import Machine
from benchmarks.outcomes import (
    FootprintResult,
    IdleResult,
    LoadResult,
    Measured,
    ScenarioOutcome,
    ServerSummary,
    kib_per_connection,
    ratio,
    requests_per_s,
    worker_rss_mib,
)
from benchmarks.scenarios import BY_NAME, Scenario
from benchmarks.settings import EVERYWHERE, LABELS, SERVERS, Settings
from benchmarks.targets import TargetRow, evaluate

DASH = "—"
BROKERS = {
    "kafka": "Apache Kafka (single-node KRaft, tests/kafka/pom.xml)",
    "tansu": "Tansu (in memory)",
}


def render(machine: Machine, settings: Settings, outcomes: Sequence[ScenarioOutcome]) -> str:
    """The whole report document."""
    sections = [
        machine_section(machine),
        settings_section(settings, outcomes),
        results_section(outcomes),
        events_section(outcomes, settings),
        ratios_section(outcomes),
        targets_section(evaluate(outcomes, settings)),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def machine_section(machine: Machine) -> str:
    rows = [
        ("CPU", f"{machine.cpu_model} ({machine.cpus} CPUs)"),
        ("Kernel", machine.kernel),
        ("Python", machine.python),
        ("aiohttp", machine.aiohttp),
        ("uvloop", machine.uvloop),
        ("gateway", machine.gateway),
        ("nginx", machine.nginx),
        ("Caddy", machine.caddy),
        ("wrk", machine.wrk),
    ]
    return f"# Gateway benchmarks, {machine.date}\n\n" + _table(
        ("Machine", ""), "--", [(name, _cell(value)) for name, value in rows]
    )


def settings_section(settings: Settings, outcomes: Sequence[ScenarioOutcome]) -> str:
    """The run's knobs, and what the scenarios in it do differently (own connection
    counts, a shared backend)."""
    lines = [
        "## Settings",
        "",
        f"- load: {settings.duration} s per run, `wrk -t1 -c{settings.connections} --latency`",
        f"- workers: {settings.workers} per server "
        "(gateway workers, nginx worker_processes, Caddy GOMAXPROCS)",
        f"- rounds: {settings.rounds}, the servers alternating within each round; "
        "medians reported, errors summed over rounds",
        f"- idle_10k: {settings.idle_connections:,} keep-alive connections per server",
        f"- broker: {BROKERS[settings.broker]}, started fresh for each tracking run; its CPU "
        "is in the event table, not in the gateway's columns",
    ]
    ran = [BY_NAME[o.name] for o in outcomes if o.skipped is None and o.name in BY_NAME]
    lines += [
        f"- {scenario.name}: `wrk -t1 -c{scenario.connections}`"
        for scenario in ran
        if scenario.connections is not None
    ]
    proxied = [scenario.name for scenario in ran if scenario.backend]
    if proxied:
        lines.append(
            f"- {', '.join(proxied)}: every server proxies to one nginx backend started "
            f"per scenario (worker_processes {settings.workers}, on this machine); "
            "its CPU and memory are not in the server's columns"
        )
    return "\n".join(lines)


def results_section(outcomes: Sequence[ScenarioOutcome]) -> str:
    header = (
        "Scenario",
        "Server",
        "Requests/s",
        "p50 (ms)",
        "p99 (ms)",
        "Errors",
        "CPU (cores)",
        "CPU µs/req",
        "Peak RSS (MiB)",
    )
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for outcome in outcomes:
        if outcome.skipped is not None:
            rows.append((outcome.name, DASH, f"skipped: {outcome.skipped}", *[""] * 6))
            continue
        for summary in outcome.servers:
            rows.append((outcome.name, LABELS[summary.server], *_figures(summary)))
            if summary.failures:
                notes.append(
                    f"- {outcome.name}, {LABELS[summary.server]}: {len(summary.failures)} of "
                    f"{summary.runs} runs failed: {_cell(summary.failures[0])}"
                )
    text = "## Results\n\n" + _table(header, "--:", rows)
    notes.append(
        "- CPU µs/req = the server's cores x 10^6 / requests/s: its CPU per request, "
        "comparable across machines of different speeds."
    )
    if any(isinstance(s.median, IdleResult) for outcome in outcomes for s in outcome.servers):
        notes.append(
            "- idle rows: Errors = connections that could not be opened; "
            "Peak RSS = the server's RSS with every connection open."
        )
    for outcome in outcomes:
        footprint = outcome.median("gateway")
        if isinstance(footprint, FootprintResult):
            notes.append(
                f"- {outcome.name}: Peak RSS = the largest of {footprint.workers} idle workers "
                f"(supervisor {footprint.supervisor_rss_mib:.1f} MiB), serving config.json."
            )
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def _figures(summary: ServerSummary) -> tuple[str, ...]:
    median = summary.median
    if isinstance(median, LoadResult):
        return (
            f"{median.requests_per_s:,.0f}",
            f"{median.p50_ms:.2f}",
            f"{median.p99_ms:.2f}",
            str(median.errors),
            f"{median.cpu_cores:.2f}",
            _number(cpu_us(median.cpu_cores, median.requests_per_s), ",.0f"),
            f"{median.peak_rss_mib:.1f}",
        )
    if isinstance(median, IdleResult):
        return (DASH, DASH, DASH, str(median.errors), DASH, DASH, f"{median.rss_mib:.1f}")
    if isinstance(median, FootprintResult):
        return (DASH, DASH, DASH, "0", DASH, DASH, f"{median.worker_rss_mib:.1f}")
    return ("failed", "", "", "", "", "", "")


def cpu_us(cores: float, per_s: float) -> float | None:
    """CPU microseconds per unit of work: ``cores`` busy while doing ``per_s`` of it."""
    return cores * 1e6 / per_s if per_s > 0 else None


def events_section(outcomes: Sequence[ScenarioOutcome], settings: Settings) -> str:
    """The gateway's tracking runs: events promised, events in Kafka; empty when none ran."""
    header = (
        "Scenario",
        "Delivery",
        "Requests/s",
        "vs hello",
        "Expected",
        "Delivered",
        "Shortfall",
        "Drain (s)",
        "Events/s",
        "Events/s per worker",
        "CPU µs/event",
        "Broker CPU (cores)",
    )
    by_name = {outcome.name: outcome for outcome in outcomes}
    hello = requests_per_s(by_name["hello"].median("gateway")) if "hello" in by_name else None
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes:
        result = outcome.median("gateway")
        if not isinstance(result, LoadResult) or result.delivery is None:
            continue
        events = result.delivery
        scenario = BY_NAME.get(outcome.name)
        rows.append(
            (
                outcome.name,
                (scenario.delivery if scenario else None) or DASH,
                f"{result.requests_per_s:,.0f}",
                _times(ratio(result.requests_per_s, hello)),
                f"{events.expected:,}",
                f"{events.delivered:,}",
                f"{events.shortfall:,}",
                f"{events.drain_s:.1f}",
                f"{events.events_per_s:,.0f}",
                f"{events.events_per_s / settings.workers:,.0f}",
                _number(cpu_us(result.cpu_cores, _answered_events(result, scenario)), ",.1f"),
                f"{events.broker_cores:.2f}",
            )
        )
    if not rows:
        return ""
    notes = [
        "- durable: the answer waits until Kafka acknowledged the event; "
        "fast: it is answered once enqueued (pixels always are).",
        "- Expected = 2xx/3xx answers x events per request, as wrk counted them; requests in "
        "flight when wrk stops (up to one per connection) are answered but not counted, so "
        "Delivered may exceed Expected by that much, and a loss smaller than it would not show.",
        "- Shortfall = answered but not in Kafka once the count stopped growing (at most 10 s "
        "after the load); a durable row must show 0.",
        "- Events/s = Delivered / (load + Drain); Drain = seconds from the end of the load "
        f"until the last event reached Kafka. The broker ({BROKERS[settings.broker]}, fresh "
        "per run) shares the machine's cores with the gateway.",
        "- CPU µs/event = the gateway's cores x 10^6 / events answered per second (requests/s "
        "x events per request): the serving processes' CPU per event, answering included.",
    ]
    return (
        "## Event delivery (gateway)\n\n" + _table(header, "--:", rows) + "\n\n" + "\n".join(notes)
    )


def _answered_events(result: LoadResult, scenario: Scenario | None) -> float:
    return result.requests_per_s * (scenario.events_per_request if scenario else 1)


def ratios_section(outcomes: Sequence[ScenarioOutcome]) -> str:
    """Each scenario's figure per server, and the gateway's over each peer's; the
    optional peers (nginx+log, Varnish) get columns only when some scenario ran them."""
    ran = {summary.server for outcome in outcomes for summary in outcome.servers}
    servers = tuple(s for s in SERVERS if s in EVERYWHERE or s in ran)
    header = (
        "Scenario",
        "Measure",
        *(LABELS[server] for server in servers),
        *(f"gateway/{LABELS[server]}" for server in servers[1:]),
    )
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes:
        if outcome.skipped is not None:
            rows.append((outcome.name, f"skipped: {outcome.skipped}", *[""] * (len(header) - 2)))
            continue
        measure, figure, spec = _measure_of(outcome)
        gateway, *peers = (figure(outcome.median(server)) for server in servers)
        rows.append(
            (
                outcome.name,
                measure,
                *(_number(value, spec) for value in (gateway, *peers)),
                *(_times(ratio(gateway, peer)) for peer in peers),
            )
        )
    return "## Ratios\n\n" + _table(header, "--:", rows)


def _measure_of(
    outcome: ScenarioOutcome,
) -> tuple[str, Callable[[Measured | None], float | None], str]:
    """What the ratios compare for a scenario: its label, how to read it, its format."""
    medians = [summary.median for summary in outcome.servers]
    if any(isinstance(median, IdleResult) for median in medians):
        return "KiB per idle connection", kib_per_connection, ".1f"
    if any(isinstance(median, FootprintResult) for median in medians):
        return "MiB per idle worker", worker_rss_mib, ".1f"
    return "requests/s", requests_per_s, ",.0f"


def targets_section(rows: Sequence[TargetRow]) -> str:
    met = {True: "yes", False: "no", None: DASH}
    body = [(row.goal, row.scenario, row.measured, met[row.met]) for row in rows]
    return "## Targets (reported, not asserted)\n\n" + _table(
        ("Target", "Scenario", "Measured", "Met"), "---", body
    )


def _number(value: float | None, spec: str) -> str:
    return DASH if value is None else format(value, spec)


def _times(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}x"


def _cell(text: str) -> str:
    """Text made safe for one table cell: one line, no column separators."""
    return " ".join(text.split()).replace("|", "\\|")


def _table(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; the first two columns are labels (left), the rest use ``align``."""
    rule = ["---", "---", *([align] * (len(header) - 2))]
    lines = [_row(header), _row(rule), *(_row(row) for row in rows)]
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
