"""``python -m benchmarks``: load the gateway, nginx and Caddy on loopback and write a report."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from pathlib import Path

from benchmarks.idle import raise_open_files_limit
from benchmarks.machine import MissingTools, describe_machine, find_tools
from benchmarks.report import render
from benchmarks.runner import run_scenarios
from benchmarks.scenarios import SCENARIOS, select
from benchmarks.settings import IDLE_CONNECTIONS, SMOKE_IDLE_CONNECTIONS, Settings

RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark the gateway against nginx and Caddy on 127.0.0.1.",
    )
    names = ",".join(scenario.name for scenario in SCENARIOS)
    parser.add_argument("--scenarios", help=f"comma-separated subset of: {names} (default: all)")
    parser.add_argument("--duration", type=int, help="seconds per load run (default 10)")
    parser.add_argument(
        "--connections",
        type=int,
        default=50,
        help="wrk connections (default 50; proxy_small_c1000 always uses 1000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="gateway workers, nginx worker_processes and Caddy GOMAXPROCS (default: CPU count)",
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3)")
    parser.add_argument(
        "--broker",
        choices=("kafka", "tansu"),
        default="kafka",
        help="the broker tracking runs send to: Apache Kafka (default) or in-memory Tansu",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="quick check: 2 s runs, 1 round, 500 idle connections",
    )
    parser.add_argument(
        "--out", help="report path, or - to only print it (default: benchmarks/results/DATE.md)"
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """Explicit options win; --smoke only changes the defaults."""
    duration: int = args.duration if args.duration is not None else (2 if args.smoke else 10)
    rounds: int = args.rounds if args.rounds is not None else (1 if args.smoke else 3)
    return Settings(
        duration=duration,
        connections=args.connections,
        workers=args.workers,
        rounds=rounds,
        idle_connections=SMOKE_IDLE_CONNECTIONS if args.smoke else IDLE_CONNECTIONS,
        broker=args.broker,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        scenarios = select(args.scenarios)
    except KeyError as unknown:
        print(f"benchmarks: unknown scenario {unknown}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    if min(settings.duration, settings.connections, settings.workers, settings.rounds) < 1:
        print("benchmarks: duration, connections, workers and rounds must be >= 1", file=sys.stderr)
        return 2
    try:
        tools = find_tools()
    except MissingTools as missing:
        print(f"benchmarks: {missing}", file=sys.stderr)
        return 1
    now = datetime.datetime.now().astimezone()
    # Before any server starts, so every server and wrk inherit room for the idle
    # connections and for proxy_small_c1000 (wrk alone then holds 1,000 sockets).
    raise_open_files_limit()
    try:
        outcomes = asyncio.run(run_scenarios(scenarios, settings, tools))
    except KeyboardInterrupt:
        print("benchmarks: interrupted; every server was stopped", file=sys.stderr)
        return 130
    machine = describe_machine(tools, now.strftime("%Y-%m-%d %H:%M %Z"))
    text = render(machine, settings, outcomes)
    print(text, end="")
    if args.out != "-":
        out = Path(args.out) if args.out else RESULTS / f"{now:%Y-%m-%d}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".tmp")
        partial.write_text(text)
        partial.replace(out)
        print(f"benchmarks: report written to {out}", file=sys.stderr)
    failed = any(summary.failures for outcome in outcomes for summary in outcome.servers)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
