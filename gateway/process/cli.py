"""Command line: ``gateway run``, ``gateway check``, the admin API's clients, the
one-line starts (``gateway proxy``, ``serve-files``, ``collect``), ``gateway --version``.

The only place that prints to the user and picks exit codes: 0 fine, 2 bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.config import Config, ConfigError, RedisBackend, Route, load_config
from gateway.process import admin, starts

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="An asyncio edge gateway: TLS, routing, rate limits, static files, "
        "reverse proxy, an edge cache, and every tracked request onto Kafka.",
        epilog="Examples: gateway run --config config.json; gateway proxy --from :8080 --to "
        "127.0.0.1:3000; gateway COMMAND --help",
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{run,check,proxy,serve-files,collect,schema,spool,links,cache,experiments,certs}",
    )
    for name, text, example in (
        ("run", "serve the config", "gateway run --config config.json"),
        ("check", "validate the config and show what it serves", "gateway check"),
        ("spool", "print the events held in the disk spool, one JSON record a line",
         "gateway spool --config config.json | head"),
    ):  # fmt: skip
        command = commands.add_parser(
            name, help=text, description=f"{text[0].upper()}{text[1:]}. Example: {example}"
        )
        command.add_argument("--config", default="config.json", help="config file (config.json)")
    starts.add_commands(commands)
    admin.add_commands(commands)
    # Started by the supervisor only; not part of the user-facing interface.
    worker = commands.add_parser("worker")
    worker.add_argument("--config", required=True)
    worker.add_argument("--fds", required=True)
    worker.add_argument("--supervisor", type=int, required=True)
    worker.add_argument("--slot", type=int, default=0)
    # The supervisor's copy of the last config that validated: what the worker loads.
    worker.add_argument("--snapshot")
    return parser


def describe(config: Config) -> str:
    """What a config would serve, for ``gateway check``."""
    server = config.server
    lines = [f"workers: {server.worker_count}", "listeners:"]
    for listener in server.listeners:
        host = f"[{listener.host}]" if ":" in listener.host else listener.host
        extra = "  admin: health, ready, metrics, reload" if listener.admin else ""
        if listener.redirect_to_https:
            extra += f"  redirects to https port {listener.redirect_to_https}"
        scheme = "https" if listener.tls else "http"
        lines.append(f"  {listener.name:<12} {scheme}://{host}:{listener.port}{extra}")
    lines.append(f"built-in endpoints: {server.builtin_prefix}{{health,ready,metrics,reload}}")
    lines.append("routes:" if config.routes else "routes: none (every request gets 404)")
    for route in config.routes:
        hosts = ",".join(route.match.hosts) or "*"
        lines.append(
            f"  {route.name:<12} host={hosts} path={route.match.path_prefix} -> "
            f"{_action(route, config)}"
        )
    tls = config.tls
    if tls is not None:
        names = [f"{pair.cert}" for pair in tls.certificates]
        if tls.acme is not None:
            names.append(
                f"acme {tls.acme.challenge} from {tls.acme.directory} for "
                f"{','.join(tls.acme.domains)} (stored in {tls.acme.storage})"
            )
        lines.append("certificates: " + "; ".join(names))
    sink = "kafka " + ",".join(config.kafka.bootstrap_servers) if config.kafka else "spool only"
    lines.append(f"events: {sink}; spool {config.spool.dir}/worker-N")
    backend = config.rate_limits.backend
    if isinstance(backend, RedisBackend):
        shared = [rule.name for rule in config.rate_limits.rules if rule.shared]
        lines.append(
            f"shared rate limits: {', '.join(shared) or 'none'} on {backend.url} "
            f"(on_error={backend.on_error}, timeout {backend.timeout_ms} ms)"
        )
    return "\n".join(lines)


def _action(route: Route, config: Config) -> str:
    from gateway.handlers.kinds import kind_of

    extras = [f"rate_limits={','.join(route.rate_limits)}"] if route.rate_limits else []
    if route.track:
        extras.append("track")
    middleware = [
        name
        for name in ("ip_allow", "ip_deny", "basic_auth", "forward_auth", "headers", "compress")
        if getattr(route, name)
    ]
    if middleware:
        extras.append(f"middleware={','.join(middleware)}")
    return " ".join([kind_of(route).describe(route, config), *extras])


def _start(args: argparse.Namespace) -> int:
    """A one-line start: print the config built from the flags, then serve it."""
    import json
    import tempfile
    from pathlib import Path

    from gateway.config import parse_config

    try:
        built = starts.BUILDERS[args.command](args)
    except ValueError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    text = json.dumps(built, indent=2) + "\n"
    print(text, end="", flush=True)
    try:
        config = parse_config(text.encode(), source=f"gateway {args.command}", env={})
    except ConfigError as exc:
        print(f"gateway: invalid config {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.print:
        return 0
    print("gateway: serving the config above (save it as config.json and grow it; "
          "gateway run serves it)", file=sys.stderr)  # fmt: skip
    from gateway.process.supervisor import Supervisor

    with tempfile.TemporaryDirectory(prefix="gateway-") as folder:
        path = Path(folder) / "config.json"
        path.write_text(text)
        return asyncio.run(Supervisor(str(path), config).run())


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

        from gateway.process.run import run_worker

        fds = [int(fd) for fd in args.fds.split(",")]
        return uvloop.run(
            run_worker(args.config, fds, args.supervisor, args.slot, snapshot=args.snapshot)
        )

    if args.command == "schema":
        import json

        from gateway.config.schema import config_schema

        print(json.dumps(config_schema(), indent=2))
        return 0
    if args.command in starts.BUILDERS:
        return _start(args)
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

    if args.command in admin.COMMANDS:
        return admin.COMMANDS[args.command](args, config)

    from gateway.process.supervisor import Supervisor

    return asyncio.run(Supervisor(args.config, config).run())
