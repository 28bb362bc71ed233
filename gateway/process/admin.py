"""The admin API's command-line clients: ``gateway links``, ``cache``, ``experiments``
and ``certs``, each a request or two to the config's admin listener (or ``--url``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.config import Config

EXIT_CONFIG = 2


def add_commands(commands: Any) -> None:
    """The admin clients, on ``gateway``'s sub-command parser: each takes ``--config``
    and ``--url``, then an action."""

    def client(name: str, text: str, description: str) -> Any:
        parser = commands.add_parser(name, help=text, description=description)
        parser.add_argument("--config", default="config.json", help="config file (config.json)")
        parser.add_argument("--url", help="admin base URL (default: the config's admin listener)")
        return parser.add_subparsers(dest="action", required=True)

    actions = client(
        "links", "manage redirect links through the admin API",
        "List, add and delete redirect links through the admin API. Examples: gateway links "
        "add https://shop.example/sale --slug sale --utm-source mail; gateway links list; "
        "gateway links rm sale",
    )  # fmt: skip
    actions.add_parser("list", help="list links").add_argument("--tag")
    add = actions.add_parser("add", help="create a link")
    add.add_argument("target")
    add.add_argument("--slug")
    add.add_argument("--status", type=int, default=302)
    add.add_argument("--pass-query", action="store_true")
    add.add_argument("--expires", help="ISO 8601 time after which the link answers 410")
    add.add_argument("--tag", action="append", default=[])
    for key in ("source", "medium", "campaign", "term", "content"):
        add.add_argument(f"--utm-{key}")
    actions.add_parser("rm", help="delete a link").add_argument("slug")
    actions = client(
        "cache", "purge the edge cache through the admin API",
        "Purge cached answers on every worker (and, with a Redis tier, every instance). "
        "Examples: gateway cache purge https://shop.example/page; gateway cache purge --tag "
        "product-42 --soft",
    )  # fmt: skip
    purge = actions.add_parser("purge", help="purge by URL, prefix or tag")
    named = purge.add_mutually_exclusive_group(required=True)
    named.add_argument("purge_url", nargs="?", metavar="URL", help="one URL, query included")
    named.add_argument("--prefix", help="every URL below it, e.g. https://shop.example/blog/")
    named.add_argument("--tag", help="what the origin tagged (Surrogate-Key)")
    purge.add_argument("--soft", action="store_true", help="mark stale instead of removing")
    actions = client(
        "experiments", "experiments' exposures and split check through the admin API",
        "Exposures per variant (and per day, with show) summed over every worker, and the "
        "sample-ratio-mismatch check against the configured weights. Examples: gateway "
        "experiments list; gateway experiments show checkout",
    )  # fmt: skip
    actions.add_parser("list", help="every experiment, one line each")
    actions.add_parser("show", help="one experiment, as JSON").add_argument("name")
    actions = client(
        "certs", "the certificates served, and ACME renewals, through the admin API",
        "List the certificates a worker serves (name, expiry, placeholder, the last failed "
        "order) or order ACME certificates now, due or not. Examples: gateway certs list; "
        "gateway certs renew shop.example.com",
    )  # fmt: skip
    actions.add_parser("list", help="every certificate, one line each")
    renew = actions.add_parser("renew", help="order now (every ACME name, or NAME)")
    renew.add_argument("name", nargs="?", help="one of tls.acme.domains")


def _admin_base(args: argparse.Namespace, config: Config) -> str | None:
    if args.url is not None:
        return str(args.url).rstrip("/")
    admin = next((lst for lst in config.server.listeners if lst.admin), None)
    if admin is None:
        print("gateway: no admin listener in the config (or pass --url)", file=sys.stderr)
        return None
    return f"http://{admin.host}:{admin.port}"


def _call(
    url: str, method: str, body: bytes | None, token: str | None, timeout: float = 10.0
) -> str | None:
    """One admin API request; its answer, or None once the failure is printed."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        print(f"gateway: {exc.read().decode().strip()}", file=sys.stderr)
    except urllib.error.URLError as exc:
        print(f"gateway: cannot reach {url}: {exc.reason}", file=sys.stderr)
    return None


def cache(args: argparse.Namespace, config: Config) -> int:
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


def experiments(args: argparse.Namespace, config: Config) -> int:
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


def links(args: argparse.Namespace, config: Config) -> int:
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


def certs(args: argparse.Namespace, config: Config) -> int:
    """``gateway certs list|renew [NAME]``: the admin API's certificates."""
    import json
    import urllib.parse

    base = _admin_base(args, config)
    if base is None:
        return EXIT_CONFIG
    url = base + config.server.builtin_prefix + "certificates"
    if args.action == "list":
        answer = _call(url, "GET", None, None)
        if answer is None:
            return 1
        for item in json.loads(answer)["certificates"]:
            expiry = "placeholder" if item["placeholder"] else f"expires {item['not_after']}"
            failed = f"  last order failed: {item['last_error']}" if item["last_error"] else ""
            print(f"{item['name']}\t{expiry}{failed}")
        return 0
    if args.name:
        url += "/renew?" + urllib.parse.urlencode({"name": args.name})
    else:
        url += "/renew"
    answer = _call(url, "POST", b"", None, timeout=600)  # an order takes its time
    if answer is None:
        return 1
    for result in json.loads(answer)["results"]:
        print(f"{result['domain']}\t{result['status']}\t{result['detail']}".rstrip())
    return 0


COMMANDS = {"links": links, "cache": cache, "experiments": experiments, "certs": certs}
