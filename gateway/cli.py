"""Command line: ``gateway run``, ``gateway check``, ``gateway --version``.

The only place that prints to the user and picks exit codes: 0 fine, 2 bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.config import Config, ConfigError, Route, load_config

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="asyncio edge gateway")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,check,spool}")
    for name, text in (
        ("run", "serve the config"),
        ("check", "validate the config and show it"),
        ("spool", "print the events held in the disk spool, one JSON record a line"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--config", default="config.json", help="config file (config.json)")
    # Started by the supervisor only; not part of the user-facing interface.
    worker = commands.add_parser("worker")
    worker.add_argument("--config", required=True)
    worker.add_argument("--fds", required=True)
    worker.add_argument("--supervisor", type=int, required=True)
    worker.add_argument("--slot", type=int, default=0)
    return parser


def describe(config: Config) -> str:
    """What a config would serve, for ``gateway check``."""
    server = config.server
    lines = [f"workers: {server.worker_count}", "listeners:"]
    for listener in server.listeners:
        host = f"[{listener.host}]" if ":" in listener.host else listener.host
        extra = "  admin: health, ready, metrics, reload" if listener.admin else ""
        lines.append(f"  {listener.name:<12} http://{host}:{listener.port}{extra}")
    lines.append(f"built-in endpoints: {server.builtin_prefix}{{health,ready,metrics,reload}}")
    lines.append("routes:" if config.routes else "routes: none (every request gets 404)")
    for route in config.routes:
        hosts = ",".join(route.match.hosts) or "*"
        lines.append(
            f"  {route.name:<12} host={hosts} path={route.match.path_prefix} -> "
            f"{_action(route, config)}"
        )
    sink = "kafka " + ",".join(config.kafka.bootstrap_servers) if config.kafka else "spool only"
    lines.append(f"events: {sink}; spool {config.spool.dir}/worker-N")
    return "\n".join(lines)


def _action(route: Route, config: Config) -> str:
    delivery = route.delivery or config.tracking.delivery
    if route.respond is not None:
        action = f"respond {route.respond.status}"
    elif route.collect is not None:
        action = f"collect {','.join(route.collect.endpoints)} ({delivery})"
    else:
        action = f"segment API ({delivery})"
    extras = [f"rate_limits={','.join(route.rate_limits)}"] if route.rate_limits else []
    if route.track:
        extras.append("track")
    return " ".join([action, *extras])


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"gateway: invalid config {exc}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    if args.command == "worker":
        import uvloop

        from gateway.worker import run_worker

        fds = [int(fd) for fd in args.fds.split(",")]
        return uvloop.run(run_worker(args.config, fds, args.supervisor, args.slot))

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.command == "check":
        print(f"{args.config}: OK")
        print(describe(config))
        return 0
    if args.command == "spool":
        from pathlib import Path

        from gateway.events.spool import read_all

        for _, record in read_all(Path(config.spool.dir)):
            sys.stdout.write(record.value.decode(errors="replace") + "\n")
        return 0

    from gateway.supervisor import Supervisor

    return asyncio.run(Supervisor(args.config, config).run())
