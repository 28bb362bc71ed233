"""Config files that make the gateway, nginx and Caddy do the same job on one loopback port.

A :class:`Site` is the part a scenario varies; the rest (workers, connection limits, logging
off, temp paths, the Kafka section) is fixed here so every server gets the same cores and
the same slack.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# A fresh broker per gateway run, so one fixed topic holds exactly that run's events.
EVENTS_TOPIC = "events"
WRITE_KEY = "bench-write-key"
SEGMENT_SUCCESS = '{"success":true}'
INTAKE_USER, INTAKE_PASSWORD = "rill", "bench-intake-secret"
# The backend's small answer, from memory; any other path on it is a file.
SMALL_PATH = "/small"

Delivery = Literal["durable", "fast"]


@dataclass(frozen=True, slots=True)
class Site:
    """What each server serves in a scenario, in each server's own config language."""

    gateway_routes: tuple[Mapping[str, Any], ...]
    nginx_locations: str  # directives inside nginx's ``server { }``
    caddy_directives: str  # directives inside the Caddyfile site block
    # Top-level gateway config sections besides server, spool, routes and kafka.
    gateway_sections: Mapping[str, Any] = field(default_factory=dict)
    # Keys added to the gateway's own server section (trusted_proxies, say).
    gateway_server: Mapping[str, Any] = field(default_factory=dict)
    nginx_http: str = ""  # directives in nginx's ``http { }`` before the server: upstreams
    # (certificate chain, key) when every server listens with TLS on its port.
    tls: tuple[str, str] | None = None
    # nginx answering the same requests and recording each as a JSON line (``nginx+log``,
    # the native floor of answering and recording a hit); None: no such peer here.
    nginx_log_locations: str | None = None
    # The gateway serves this config file as it is, but for its ports and spool (the
    # shipped config.json, for the footprint); no peer serves such a site.
    config_file: Path | None = None
    # Varnish's VCL for the site (its backend and what it does); None: no Varnish peer.
    varnish_vcl: str | None = None


SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config.json"


def shipped_site() -> Site:
    """The gateway as ``make run`` starts it: the project's own config.json."""
    return Site(
        gateway_routes=(), nginx_locations="", caddy_directives="", config_file=SHIPPED_CONFIG
    )


def shipped_config(path: Path, *, ports: Iterator[int], workdir: Path) -> str:
    """``path``'s config with each listener on the next of ``ports`` (the first is the
    one probed) and the spool in ``workdir``: the rest as shipped."""
    config = json.loads(path.read_text())
    for listener in config["server"]["listeners"]:
        listener["port"] = next(ports)
    config["spool"] = {**config.get("spool", {}), "dir": str(workdir / "spool")}
    return json.dumps(config, indent=2) + "\n"


def respond_site(body: str) -> Site:
    """Every path answers 200 with ``body`` from memory: hello world, idle connections."""
    return Site(
        gateway_routes=({"name": "respond", "respond": {"status": 200, "body": body}},),
        nginx_locations=f"location / {{ return 200 {nginx_quote(body)}; }}",
        caddy_directives=f"respond {caddy_quote(body)} 200",
    )


def limited_site(body: str, redis: str | None) -> Site:
    """Hello behind a rate limit that never refuses: each request pays for the decision,
    in this worker's buckets, or with ``redis`` (a URL) on Redis as a shared rule. nginx
    and Caddy answer as for hello: what the gateway compares with is itself."""
    rule = {"name": "bench", "rate": 1e9, "burst": 1_000_000_000, "shared": redis is not None}
    limits: dict[str, Any] = {"rules": [rule]}
    if redis is not None:
        limits["backend"] = {"kind": "redis", "url": redis, "timeout_ms": 100}
    hello = respond_site(body)
    return Site(
        gateway_routes=({**hello.gateway_routes[0], "rate_limits": ["bench"]},),
        nginx_locations=hello.nginx_locations,
        caddy_directives=hello.caddy_directives,
        gateway_sections={"rate_limits": limits},
    )


def pixel_site() -> Site:
    """Tracking pixels: the gateway's collect route, nginx's built-in empty_gif; Caddy has no
    binary bodies in a Caddyfile, so it answers 200 with the GIF type and an empty body."""
    return Site(
        gateway_routes=({"name": "collect", "collect": {}},),
        nginx_locations="location /img/ { empty_gif; }",
        caddy_directives="header Content-Type image/gif\n\trespond 200",
        nginx_log_locations=(
            'location /img/ { add_header Cache-Control "no-store" always; empty_gif; }'
        ),
    )


def mixed_pixel_site(enrich: Mapping[str, Any] | None) -> Site:
    """pixel_site for requests that name their client in X-Forwarded-For (wrk's visitor
    mix), with ``tracking.enrich`` when given."""
    sections = {"tracking": {"enrich": dict(enrich)}} if enrich is not None else {}
    return dataclasses.replace(
        pixel_site(),
        gateway_sections=sections,
        gateway_server={"trusted_proxies": ["127.0.0.1/32"]},
    )


def tracker_site(delivery: Delivery) -> Site:
    """Tracker POSTs: the gateway's collect route; nginx and Caddy answer 204 and drop the body."""
    return Site(
        gateway_routes=({"name": "collect", "collect": {}, "delivery": delivery},),
        nginx_locations="location / { return 204; }",
        caddy_directives="respond 204",
        # The echo module reads the body, so that $request_body is there to be logged.
        nginx_log_locations="location / { echo_read_request_body; echo_status 204; }",
    )


def segment_site(delivery: Delivery) -> Site:
    """Segment's /v1/batch: the gateway's segment route with a write key; nginx and Caddy
    answer Segment's success body without reading the batch."""
    return Site(
        gateway_routes=(
            {
                "name": "segment",
                "match": {"path_prefix": "/v1"},
                "segment": {},
                "delivery": delivery,
            },
        ),
        nginx_locations=(
            "location / { default_type application/json; "
            f"return 200 {nginx_quote(SEGMENT_SUCCESS)}; }}"
        ),
        caddy_directives=(
            f"header Content-Type application/json\n\trespond {caddy_quote(SEGMENT_SUCCESS)} 200"
        ),
        gateway_sections={"tracking": {"write_keys": [WRITE_KEY]}},
    )


def intake_site(delivery: Delivery) -> Site:
    """Rill's intake: the gateway's intake route with one user; nginx and Caddy answer 204
    without reading the events."""
    users = [{"username": INTAKE_USER, "password": INTAKE_PASSWORD}]
    route = {"name": "intake", "match": {"path_prefix": "/intake"}, "intake": {"users": users}}
    return Site(
        gateway_routes=({**route, "delivery": delivery},),
        nginx_locations="location / { return 204; }",
        caddy_directives="respond 204",
    )


def snowplow_site(delivery: Delivery) -> Site:
    """Snowplow's tp2 POST: the gateway's snowplow route; nginx and Caddy answer the
    collector's ``ok`` without reading the events."""
    return Site(
        gateway_routes=({"name": "snowplow", "snowplow": {}, "delivery": delivery},),
        nginx_locations="location / { default_type text/plain; return 200 ok; }",
        caddy_directives="respond ok 200",
    )


def redirect_site(slug: str, target: str) -> Site:
    """Short link ``/l/<slug>`` answering 302 to ``target``: the gateway's redirect route
    with the link declared in its config, nginx's ``return``, Caddy's ``redir``."""
    nginx = _server_lines(
        # The 302 body nginx writes names its version unless told not to.
        "server_tokens off;",
        f"location = /l/{slug} {{ return 302 {target}; }}",
    )
    return Site(
        gateway_routes=({"name": "links", "match": {"path_prefix": "/l"}, "redirect": {}},),
        nginx_locations=nginx,
        caddy_directives=f"redir /l/{slug} {target} 302",
        nginx_log_locations=nginx,
        gateway_sections={"redirects": {"links": [{"slug": slug, "target": target}]}},
    )


def proxy_site(upstream: str) -> Site:
    """Every path is proxied to ``upstream`` (``host:port``) over pooled keep-alive
    connections: the gateway's by default, nginx's through an ``upstream`` block with
    ``keepalive`` (without it nginx opens a connection per request), Caddy's by default."""
    return Site(
        gateway_routes=(
            {
                "name": "app",
                "match": {"path_prefix": "/"},
                "proxy": {"upstreams": [f"http://{upstream}"]},
            },
        ),
        nginx_http=f"upstream backend {{ server {upstream}; keepalive 64; }}",
        nginx_locations=(
            "location / { proxy_pass http://backend; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; }'
        ),
        caddy_directives=f"reverse_proxy {upstream}",
    )


# The backend's 1 KiB answer that says it may be kept an hour (proxy_cached).
CACHEABLE_PATH = "/cacheable"


# proxy_experiment: one visitor's cookies, as a returning visitor sends them.
EXPERIMENT = {
    "name": "checkout",
    "routes": ["app"],
    "variants": [{"name": "old", "weight": 0.5}, {"name": "new", "weight": 0.5}],
}
EXPERIMENT_VISITOR = "0193a5b8-0000-7000-8000-0000000000aa"


def experiment_site(upstream: str) -> Site:
    """proxy_site with the route in an experiment (both variants proxy alike: what is
    measured is the step, not a second backend)."""
    return dataclasses.replace(proxy_site(upstream), gateway_sections={"experiments": [EXPERIMENT]})


def cached_site(upstream: str) -> Site:
    """The proxy with a shared cache in front, answering the backend's cacheable 1 KiB
    from memory: the gateway's route cache, nginx's proxy_cache (its own keys zone under
    its prefix), Varnish with its default VCL. Caddy (Debian's has no cache module)
    proxies every request: the gateway's target is 1.3x Caddy's proxying."""
    proxied = proxy_site(upstream)
    host, _, port = upstream.rpartition(":")
    return Site(
        gateway_routes=({**proxied.gateway_routes[0], "cache": {}},),
        nginx_http=proxied.nginx_http + "\n    proxy_cache_path cache keys_zone=edge:16m;",
        nginx_locations=(
            "location / { proxy_pass http://backend; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; proxy_cache edge; }'
        ),
        caddy_directives=proxied.caddy_directives,
        varnish_vcl=f'vcl 4.1;\nbackend default {{ .host = "{host}"; .port = "{port}"; }}\n',
    )


def middleware_site(upstream: str) -> Site:
    """The proxy with the middleware people add first: a security header on every
    answer, an IP allow list, and gzip for JSON (each server's own: the gateway's route
    middleware, nginx's add_header/allow/gzip, Caddy's header/remote_ip/encode)."""
    return Site(
        gateway_routes=(
            {
                "name": "app",
                "match": {"path_prefix": "/"},
                "ip_allow": ["127.0.0.0/8"],
                "headers": {"response": {"set": {"X-Frame-Options": "DENY"}}},
                "compress": {"encodings": ["gzip"]},
                "proxy": {"upstreams": [f"http://{upstream}"]},
            },
        ),
        nginx_http=f"upstream backend {{ server {upstream}; keepalive 64; }}",
        nginx_locations=(
            "location / { allow 127.0.0.0/8; deny all; add_header X-Frame-Options DENY; "
            "gzip on; gzip_comp_level 5; gzip_types application/json; gzip_proxied any; "
            "gzip_vary on; proxy_pass http://backend; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; }'
        ),
        caddy_directives=(
            "@outside not remote_ip 127.0.0.0/8\n\trespond @outside 403\n\t"
            "header X-Frame-Options DENY\n\tencode gzip\n\t"
            f"reverse_proxy {upstream}"
        ),
    )


def static_site(root: Path) -> Site:
    """Files under ``root``: the gateway's static route (small files from memory), nginx
    with sendfile and its open-file cache, Caddy's file_server."""
    return Site(
        gateway_routes=(
            {"name": "files", "match": {"path_prefix": "/"}, "static": {"root": str(root)}},
        ),
        nginx_locations=_server_lines(*_NGINX_FILES, f"location / {{ root {root}; }}"),
        caddy_directives=f"root * {root}\n\tfile_server",
    )


def backend_site(root: Path, small_body: str, cacheable_body: str) -> Site:
    """The upstream the proxy scenarios share, in nginx alone: ``SMALL_PATH`` answers
    ``small_body`` from memory, ``CACHEABLE_PATH`` ``cacheable_body`` with an hour's
    freshness, every other path is a file under ``root``."""
    return Site(
        gateway_routes=(),
        nginx_locations=_server_lines(
            *_NGINX_FILES,
            f"location = {SMALL_PATH} {{ return 200 {nginx_quote(small_body)}; }}",
            f"location = {CACHEABLE_PATH} {{ add_header Cache-Control "
            f'"public, max-age=3600"; return 200 {nginx_quote(cacheable_body)}; }}',
            f"location ~ \\.json$ {{ root {root}; types {{ }} default_type application/json; }}",
            f"location / {{ root {root}; }}",
        ),
        caddy_directives="",
    )


# nginx's usual file-serving tuning: no read() copies, no open()/stat() per request.
_NGINX_FILES = ("sendfile on;", "open_file_cache max=1000 inactive=20s;")


def _server_lines(*directives: str) -> str:
    """Directives one per line, indented for nginx's ``server { }``."""
    return "\n        ".join(directives)


def nginx_quote(text: str) -> str:
    """An nginx string literal; nginx understands \\n, \\r, \\t, \\\\ and \\" in quotes."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def caddy_quote(text: str) -> str:
    """A Caddyfile string literal; it may span lines, and only \\" is an escape."""
    return '"' + text.replace('"', '\\"') + '"'


def gateway_config(
    site: Site,
    *,
    port: int,
    workers: int,
    capacity: int,
    workdir: Path,
    kafka: str | None = None,
) -> str:
    """The gateway's JSON config: one public listener, no access log (nginx's is off too),
    its event spool (and links file) in the run's work directory, events to the broker at
    ``kafka``."""
    config: dict[str, Any] = {
        "server": {
            "listeners": [{"name": "public", "host": "127.0.0.1", "port": port}],
            "workers": workers,
            "shutdown_timeout": 5,
            "limits": {"max_connections": capacity},
            "access_log": {"enabled": False},
            **site.gateway_server,
        },
        "spool": {"dir": str(workdir / "spool")},
        "routes": [dict(route) for route in site.gateway_routes],
        **site.gateway_sections,
    }
    if site.tls is not None:
        config["server"]["listeners"][0]["tls"] = True
        config["tls"] = {"certificates": [{"cert": site.tls[0], "key": site.tls[1]}]}
    if "redirects" in config:
        # The links file (used without Kafka) is, like the spool, the run's own.
        config["redirects"] = {**config["redirects"], "file": str(workdir / "links.jsonl")}
    if kafka is not None:
        # Tansu, the test broker, has no InitProducerId: idempotence must stay off.
        config["kafka"] = {
            "bootstrap_servers": [kafka],
            "topic": EVENTS_TOPIC,
            "idempotence": False,
        }
    return json.dumps(config, indent=2) + "\n"


# What the envelope takes from a request, one JSON object per line (nginx+log's record).
NGINX_EVENTS_LOG = "events.jsonl"
NGINX_LOG_FORMAT = (
    "log_format events escape=json '{"
    '"event_id":"$request_id","event_time":"$time_iso8601","ip":"$remote_addr",'
    '"method":"$request_method","host":"$host","path":"$uri","query":"$args",'
    '"user_agent":"$http_user_agent","referer":"$http_referer",'
    '"content_type":"$content_type","body":"$request_body","status":"$status"'
    "}';"
)
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"  # Debian's libnginx-mod-http-echo


def nginx_config(
    site: Site,
    *,
    port: int,
    workers: int,
    capacity: int,
    prefix: Path,
    recording: bool = False,
) -> str:
    """nginx.conf with every path nginx writes (pid, logs, temp files) under ``prefix``;
    ``recording``: the site's nginx+log variant, every request a buffered JSON line in
    ``prefix / NGINX_EVENTS_LOG``."""
    locations, record, module = site.nginx_locations, "", ""
    if recording:
        assert site.nginx_log_locations is not None, "only sites with an nginx+log variant"
        locations = site.nginx_log_locations
        module = f"load_module {ECHO_MODULE};\n"
        record = (
            f"\n    {NGINX_LOG_FORMAT}\n"
            # The body stays in memory (so $request_body has it) up to 64 KiB.
            "    client_body_buffer_size 64k;\n    client_body_in_single_buffer on;"
        )
        locations = _server_lines(
            f"access_log {prefix / NGINX_EVENTS_LOG} events buffer=64k flush=1s;", locations
        )
    return f"""\
{module}daemon off;
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
    keepalive_requests 1000000;{record}
{_nginx_http(site)}
    server {{
        listen 127.0.0.1:{port}{" ssl http2" if site.tls else ""};{_nginx_tls(site)}
        {locations}
    }}
}}
"""


def _nginx_tls(site: Site) -> str:
    if site.tls is None:
        return ""
    # The gateway's defaults: TLS 1.2 and 1.3, ECDHE with AEAD; session cache as shipped.
    return (
        f"\n        ssl_certificate {site.tls[0]};\n"
        f"        ssl_certificate_key {site.tls[1]};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        "        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;"
    )


def _nginx_http(site: Site) -> str:
    return f"\n    {site.nginx_http}\n" if site.nginx_http else ""


def caddyfile(site: Site, *, port: int) -> str:
    """A Caddyfile: no admin API, no automatic HTTPS, one loopback site (plain HTTP, or
    HTTPS with the scenario's certificate)."""
    scheme, tls = "http", ""
    if site.tls is not None:
        scheme, tls = "https", f"\ttls {site.tls[0]} {site.tls[1]}\n"
    return f"""\
{{
\tadmin off
\tauto_https off
}}

{scheme}://127.0.0.1:{port} {{
{tls}\t{site.caddy_directives}
}}
"""
