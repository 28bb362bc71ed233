"""One-line starts for the common jobs: ``gateway proxy``, ``gateway serve-files`` and
``gateway collect`` build a config from their flags, print it (to save and grow into a
``config.json``) and serve it as ``gateway run`` would; ``--print`` only prints it.
``gateway schema`` prints the config's JSON Schema."""

from __future__ import annotations

import argparse
import secrets
from typing import Any

_EXAMPLES = {
    "proxy": "gateway proxy --from :8080 --to 127.0.0.1:3000\n"
    "  gateway proxy --https shop.example.com --to 127.0.0.1:3000 --email ops@shop.example.com",
    "serve-files": "gateway serve-files --root ./public --listen :8080",
    "collect": "gateway collect --kafka 127.0.0.1:9092 --listen :8080",
}


def add_commands(commands: Any) -> None:
    """The one-line starts and ``schema``, on ``gateway``'s sub-command parser."""
    formatter = argparse.RawDescriptionHelpFormatter

    def command(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name,
            help=text,
            formatter_class=formatter,
            description=f"{text[0].upper()}{text[1:]}: builds a config, prints it (save it "
            f"as config.json to grow it) and serves it.\n\nExample:\n  {_EXAMPLES[name]}",
        )
        parser.add_argument("--print", action="store_true", help="print the config and exit")
        return parser

    proxy = command("proxy", "reverse-proxy every request to an app")
    proxy.add_argument(
        "--from",
        dest="listen",
        default=":8080",
        help="HOST:PORT to listen on (:8080, the default: every interface)",
    )
    proxy.add_argument(
        "--to",
        action="append",
        required=True,
        help="the app: HOST:PORT or a URL; repeat for several (balanced)",
    )
    proxy.add_argument(
        "--https",
        metavar="NAME",
        help="HTTPS on :443 for NAME, certificate "
        "over ACME (Let's Encrypt, agreeing to its terms), :80 redirecting",
    )
    proxy.add_argument("--email", help="the ACME account's contact address")
    proxy.add_argument("--acme-directory", help="another ACME CA's directory URL")
    files = command("serve-files", "serve a folder of static files")
    files.add_argument("--root", default=".", help="the folder (default: this one)")
    files.add_argument("--listen", default=":8080", help="HOST:PORT (default :8080)")
    files.add_argument("--listing", action="store_true", help="list folders without index")
    collect = command("collect", "take tracking calls of every protocol into Kafka")
    collect.add_argument("--listen", default=":8080", help="HOST:PORT (default :8080)")
    collect.add_argument("--kafka", help="bootstrap HOST:PORT (default: events stay in ./spool)")
    collect.add_argument("--topic", default="events", help="the events' topic (events)")
    collect.add_argument(
        "--write-key",
        action="append",
        help="Segment write key accepted (default: one made up, printed)",
    )
    collect.add_argument(
        "--intake-password", help="the Rill intake user's password (default: made up, printed)"
    )
    commands.add_parser(
        "schema",
        help="print the config's JSON Schema",
        formatter_class=formatter,
        description="Print the JSON Schema of config.json (docs/config.schema.json holds the "
        "same), for editors.\n\nExample:\n  gateway schema > config.schema.json",
    )


def _listener(name: str, listen: str, **extra: Any) -> dict[str, Any]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{listen!r} is not HOST:PORT or :PORT")
    return {"name": name, "host": host.strip("[]") or "0.0.0.0", "port": int(port), **extra}


def _upstream(to: str) -> str:
    if "://" in to:
        return to
    return f"http://127.0.0.1{to}" if to.startswith(":") else f"http://{to}"


def proxy_config(args: argparse.Namespace) -> dict[str, Any]:
    route = {"name": "app", "proxy": {"upstreams": [_upstream(to) for to in args.to]}}
    if args.https is None:
        return {"server": {"listeners": [_listener("web", args.listen)]}, "routes": [route]}
    https = _listener("https", ":443", tls=True)
    plain = _listener("http", ":80", redirect_to_https=443)
    config: dict[str, Any] = {"server": {"listeners": [https, plain]}, "routes": [route]}
    acme: dict[str, Any] = {"domains": [args.https], "agree_to_terms": True}
    if args.email:
        acme["email"] = args.email
    if args.acme_directory:
        acme["directory"] = args.acme_directory
    config["tls"] = {"acme": acme}
    return config


def files_config(args: argparse.Namespace) -> dict[str, Any]:
    static = {"root": args.root, "listing": args.listing}
    return {
        "server": {"listeners": [_listener("web", args.listen)]},
        "routes": [{"name": "files", "static": static}],
    }


def collect_config(args: argparse.Namespace) -> dict[str, Any]:
    write_keys = args.write_key or [secrets.token_urlsafe(16)]
    password = args.intake_password or secrets.token_urlsafe(16)
    config: dict[str, Any] = {
        "server": {"listeners": [_listener("web", args.listen)]},
        "tracking": {"write_keys": write_keys},
        "routes": [
            {"name": "tracker", "match": {"path_prefix": "/t"}, "collect": {}},
            {"name": "segment", "match": {"path_prefix": "/v1"}, "segment": {}},
            {
                "name": "intake",
                "match": {"path_prefix": "/intake"},
                "intake": {"users": [{"username": "intake", "password": password}]},
            },
            # Snowplow trackers append /i and /com.snowplowanalytics.snowplow/tp2 to the
            # collector's address: the root, so last.
            {"name": "snowplow", "snowplow": {}},
        ],
    }
    if args.kafka:
        config["kafka"] = {"bootstrap_servers": [args.kafka], "topic": args.topic}
    return config


BUILDERS = {"proxy": proxy_config, "serve-files": files_config, "collect": collect_config}
