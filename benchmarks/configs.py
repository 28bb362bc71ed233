"""Config files that make the gateway, nginx and Caddy do the same job on one loopback port.

A :class:`Site` is the part a scenario varies; the rest (workers, connection limits, logging
off, temp paths) is fixed here so every server gets the same cores and the same slack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Site:
    """What each server serves in a scenario, in each server's own config language."""

    gateway_routes: tuple[Mapping[str, Any], ...]
    nginx_locations: str  # directives inside nginx's ``server { }``
    caddy_directives: str  # directives inside the Caddyfile site block


def respond_site(body: str) -> Site:
    """Every path answers 200 with ``body`` from memory: hello world, idle connections."""
    return Site(
        gateway_routes=({"name": "respond", "respond": {"status": 200, "body": body}},),
        nginx_locations=f"location / {{ return 200 {nginx_quote(body)}; }}",
        caddy_directives=f"respond {caddy_quote(body)} 200",
    )


def nginx_quote(text: str) -> str:
    """An nginx string literal; nginx understands \\n, \\r, \\t, \\\\ and \\" in quotes."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def caddy_quote(text: str) -> str:
    """A Caddyfile string literal; it may span lines, and only \\" is an escape."""
    return '"' + text.replace('"', '\\"') + '"'


def gateway_config(site: Site, *, port: int, workers: int, capacity: int, workdir: Path) -> str:
    """The gateway's JSON config: one public listener, no access log (nginx's is off too),
    its event spool in the run's work directory."""
    config: dict[str, Any] = {
        "server": {
            "listeners": [{"name": "public", "host": "127.0.0.1", "port": port}],
            "workers": workers,
            "shutdown_timeout": 5,
            "limits": {"max_connections": capacity},
            "access_log": {"enabled": False},
        },
        "spool": {"dir": str(workdir / "spool")},
        "routes": [dict(route) for route in site.gateway_routes],
    }
    return json.dumps(config, indent=2) + "\n"


def nginx_config(site: Site, *, port: int, workers: int, capacity: int, prefix: Path) -> str:
    """nginx.conf with every path nginx writes (pid, logs, temp files) under ``prefix``."""
    return f"""\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;

events {{
    worker_connections {capacity};
}}

http {{
    access_log off;
    client_body_temp_path {prefix / "client_body"};
    proxy_temp_path {prefix / "proxy"};
    fastcgi_temp_path {prefix / "fastcgi"};
    uwsgi_temp_path {prefix / "uwsgi"};
    scgi_temp_path {prefix / "scgi"};
    default_type text/plain;
    charset utf-8;
    # The default (1000) closes each wrk connection every 1000 requests; neither the
    # gateway nor Caddy does that, so it would skew the comparison.
    keepalive_requests 1000000;

    server {{
        listen 127.0.0.1:{port};
        {site.nginx_locations}
    }}
}}
"""


def caddyfile(site: Site, *, port: int) -> str:
    """A Caddyfile: no admin API, no automatic HTTPS, one plain-HTTP loopback site."""
    return f"""\
{{
\tadmin off
\tauto_https off
}}

http://127.0.0.1:{port} {{
\t{site.caddy_directives}
}}
"""
