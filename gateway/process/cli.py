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
from gateway.process import starts

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
        metavar="{run,check,proxy,serve-files,collect,schema,spool,links,cache,experiments}",
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
    links = commands.add_parser(
        "links",
        help="manage redirect links through the admin API",
        description="List, add and delete redirect links through the admin API. Examples: "
        "gateway links add https://shop.example/sale --slug sale --utm-source mail; "
        "gateway links list; gateway links rm sale",
    )
    links.add_argument("--config", default="config.json", help="config file (config.json)")
    links.add_argument("--url", help="admin base URL (default: the config's admin listener)")
    actions = links.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list links")
    listing.add_argument("--tag")
    add = actions.add_parser("add", help="create a link")
    add.add_argument("target")
    add.add_argument("--slug")
    add.add_argument("--status", type=int, default=302)
    add.add_argument("--pass-query", action="store_true")
    add.add_argument("--expires", help="ISO 8601 time after which the link answers 410")
    add.add_argument("--tag", action="append", default=[])
    for key in ("source", "medium", "campaign", "term", "content"):
        add.add_argument(f"--utm-{key}")
    remove = actions.add_parser("rm", help="delete a link")
    remove.add_argument("slug")
    cache = commands.add_parser(
        "cache",
        help="purge the edge cache through the admin API",
        description="Purge cached answers on every worker (and, with a Redis tier, every "
        "instance). Examples: gateway cache purge https://shop.example/page; "
        "gateway cache purge --tag product-42 --soft",
    )
    cache.add_argument("--config", default="config.json", help="config file (config.json)")
    cache.add_argument("--url", help="admin base URL (default: the config's admin listener)")
    cache_actions = cache.add_subparsers(dest="action", required=True)
    purge = cache_actions.add_parser("purge", help="purge by URL, prefix or tag")
    named = purge.add_mutually_exclusive_group(required=True)
    named.add_argument("purge_url", nargs="?", metavar="URL", help="one URL, query included")
    named.add_argument("--prefix", help="every URL below it, e.g. https://shop.example/blog/")
    named.add_argument("--tag", help="what the origin tagged (Surrogate-Key)")
    purge.add_argument("--soft", action="store_true", help="mark stale instead of removing")
    experiments = commands.add_parser(
        "experiments",
        help="experiments' exposures and split check through the admin API",
        description="Exposures per variant (and per day, with show) summed over every "
        "worker, and the sample-ratio-mismatch check against the configured weights. "
        "Examples: gateway experiments list; gateway experiments show checkout",
    )
    experiments.add_argument("--config", default="config.json", help="config file")
    experiments.add_argument("--url", help="admin base URL (default: the config's admin)")
    experiment_actions = experiments.add_subparsers(dest="action", required=True)
    experiment_actions.add_parser("list", help="every experiment, one line each")
    show = experiment_actions.add_parser("show", help="one experiment, as JSON")
    show.add_argument("name")
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


def _admin_base(args: argparse.Namespace, config: Config) -> str | None:
    if args.url is not None:
        return str(args.url).rstrip("/")
    admin = next((lst for lst in config.server.listeners if lst.admin), None)
    if admin is None:
        print("gateway: no admin listener in the config (or pass --url)", file=sys.stderr)
        return None
    return f"http://{admin.host}:{admin.port}"


def _call(url: str, method: str, body: bytes | None, token: str | None) -> str | None:
    """One admin API request; its answer, or None once the failure is printed."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        print(f"gateway: {exc.read().decode().strip()}", file=sys.stderr)
    except urllib.error.URLError as exc:
        print(f"gateway: cannot reach {url}: {exc.reason}", file=sys.stderr)
    return None


def _cache(args: argparse.Namespace, config: Config) -> int:
    """``gateway cache purge ...``: the admin API's cache/purge."""
    import json

    base = _admin_base(args, config)
    if base is None:
        return EXIT_CONFIG
    kind, value = next(
        (k, v) for k, v in (("url", args.purge_url), ("prefix", args.prefix), ("tag", args.tag))
        if v is not None
    )  # fmt: skip
    body = json.dumps({kind: value, "soft": args.soft}).encode()
    answer = _call(base + config.server.builtin_prefix + "cache/purge", "POST", body, None)
    if answer is None:
        return 1
    print(f"purged {json.loads(answer)['purged']} entries in the worker asked; the others follow")
    return 0


def _experiments(args: argparse.Namespace, config: Config) -> int:
    """``gateway experiments list|show NAME``: the admin API's experiments."""
    import json

    base = _admin_base(args, config)
    if base is None:
        return EXIT_CONFIG
    name = "/" + args.name if args.action == "show" else ""
    answer = _call(base + config.server.builtin_prefix + "experiments" + name, "GET", None, None)
    if answer is None:
        return 1
    if args.action == "show":
        print(json.dumps(json.loads(answer), indent=2))
        return 0
    for item in json.loads(answer)["experiments"]:
        split = " ".join(f"{v['name']}={v['exposures']}" for v in item["variants"])
        srm = item["srm"]
        check = "MISMATCH" if srm["mismatch"] else "ok"
        print(f"{item['name']} {item['status']} {split} srm p={srm['p_value']:.3g} {check}")
    return 0


def _links(args: argparse.Namespace, config: Config) -> int:
    """``gateway links ...``: a small client of the management API."""
    import json

    redirects = config.redirects
    if redirects is None or not redirects.admin_token:
        print("gateway: links need redirects.admin_token in the config", file=sys.stderr)
        return EXIT_CONFIG
    base = _admin_base(args, config)
    if base is None:
        return EXIT_CONFIG
    url = base + config.server.builtin_prefix + "links"
    method, body = "GET", None
    if args.action == "list":
        url += f"?limit=500&tag={args.tag}" if args.tag else "?limit=500"
    elif args.action == "rm":
        url, method = f"{url}/{args.slug}", "DELETE"
    else:
        link = {"target": args.target, "status": args.status, "pass_query": args.pass_query,
                "tags": args.tag}  # fmt: skip
        if args.slug:
            link["slug"] = args.slug
        if args.expires:
            link["expires_at"] = args.expires
        campaign = {
            f"utm_{key}": getattr(args, f"utm_{key}")
            for key in ("source", "medium", "campaign", "term", "content")
            if getattr(args, f"utm_{key}")
        }
        if campaign:
            link["campaign"] = campaign
        method, body = "POST", json.dumps(link).encode()
    answer = _call(url, method, body, redirects.admin_token)
    if answer is None:
        return 1
    if args.action == "list":
        for link_json in json.loads(answer)["links"]:
            print(f"{link_json['slug']}\t{link_json['status']}\t{link_json['target']}")
    elif args.action == "add":
        print(json.loads(answer)["slug"])
    return 0


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

    if args.command == "links":
        return _links(args, config)
    if args.command == "cache":
        return _cache(args, config)
    if args.command == "experiments":
        return _experiments(args, config)

    from gateway.process.supervisor import Supervisor

    return asyncio.run(Supervisor(args.config, config).run())
