"""The scenario registry: what each benchmark serves, how it is loaded, and whether it can run.

Adding a scenario is one entry in ``SCENARIOS``: a name, a :class:`Site` builder (how the
gateway, nginx and Caddy are configured, from the scenario's shared :class:`Fixtures`), the
request wrk repeats and the answer each server must give it, and ``pending`` while the
gateway feature it needs has not landed.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import orjson

from benchmarks.configs import (
    CACHEABLE_PATH,
    EXPERIMENT,
    EXPERIMENT_VISITOR,
    INTAKE_PASSWORD,
    INTAKE_USER,
    SEGMENT_SUCCESS,
    SMALL_PATH,
    WRITE_KEY,
    Delivery,
    Site,
    cached_site,
    experiment_site,
    intake_site,
    limited_site,
    middleware_site,
    mixed_pixel_site,
    pixel_site,
    proxy_site,
    redirect_site,
    respond_site,
    segment_site,
    shipped_site,
    snowplow_site,
    static_site,
    tracker_site,
)
from benchmarks.enrichment import enrich_section, visitor_mix
from benchmarks.fixtures import BACKEND_BODY, CACHEABLE_BODY, Fixtures, file_bytes
from benchmarks.load import wrk_mix_script, wrk_script
from benchmarks.settings import Settings
from gateway.handlers.collect import PIXEL

HELLO_BODY = "Hello from the gateway\n"
# ngx_http_empty_gif_module.c: nginx's own 1x1 transparent GIF (43 bytes).
NGINX_EMPTY_GIF = base64.b64decode("R0lGODlhAQABAIABAAAAAP///yH5BAEAAAEALAAAAAABAAEAAAICTAEAOw==")
SEGMENT_BATCH_SIZE = 100
INTAKE_BATCH_SIZE = 100
SNOWPLOW_BATCH_SIZE = 10  # the trackers' default buffer
# Not on this machine: the answer check reads the 302 and never follows it.
REDIRECT_TARGET = "https://shop.example/sale"
# ngx_http_special_response.c: nginx's body for a 302 it generates, with server_tokens off.
NGINX_302_BODY = (
    b"<html>\r\n<head><title>302 Found</title></head>\r\n<body>\r\n"
    b"<center><h1>302 Found</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark: ``load`` runs wrk for the duration, ``idle`` holds connections open,
    ``footprint`` reads what an idle gateway worker holds (the gateway alone)."""

    name: str
    summary: str
    measure: Literal["load", "idle", "footprint"] = "load"
    # Builds every server's config from what the scenario shares (files, backend).
    site: Callable[[Fixtures], Site] | None = None
    path: str = "/"
    method: str = "GET"
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    status: int = 200  # what every server answers
    expected_body: bytes = b""
    # Per-server bodies where a server cannot send the gateway's (nginx's own GIF, say).
    expected_bodies: Mapping[str, bytes] = field(default_factory=dict)
    # Response headers every server must send, with these exact values (a redirect's Location).
    expected_headers: Mapping[str, str] = field(default_factory=dict)
    # Tracking events one request carries; above 0 the gateway run gets a Kafka broker.
    events_per_request: int = 0
    delivery: Delivery | None = None  # when the gateway answers: Kafka acked, or enqueued
    connections: int | None = None  # wrk connections, when not the run's --connections
    backend: bool = False  # the servers proxy to a shared nginx backend
    tls: bool = False  # every server answers HTTPS, with the same certificate
    http2: bool = False  # h2load drives it over HTTP/2 (ALPN h2; needs tls)
    redis: bool = False  # a redis-server for the scenario (Fixtures.redis), for shared limits
    pending: str | None = None  # why it cannot run yet: the gateway feature it needs
    # Header sets wrk rotates through, request after request (a mix of visitors).
    mix: tuple[Mapping[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.pending is None and self.site is None:
            raise ValueError(f"scenario {self.name}: runnable, so it needs a site")
        if self.http2 and not self.tls:
            raise ValueError(f"scenario {self.name}: HTTP/2 is negotiated over TLS here")

    def clients(self, settings: Settings) -> int:
        """Client connections each server holds: the idle pool, or wrk's connections."""
        if self.measure == "idle":
            return settings.idle_connections
        return self.connections or settings.connections

    @property
    def wrk_script(self) -> str | None:
        """Lua for ``wrk -s`` when the request is more than a plain GET."""
        if self.mix:
            return wrk_mix_script(self.method, self.path, self.body, self.headers, self.mix)
        return wrk_script(self.method, self.body, self.headers)

    def expected_body_for(self, server: str) -> bytes:
        if server == "nginx_log":  # nginx recording its hits answers what nginx answers
            server = "nginx"
        return self.expected_bodies.get(server, self.expected_body)


def _hello(_: Fixtures) -> Site:
    return respond_site(HELLO_BODY)


def _proxied(fixtures: Fixtures) -> Site:
    assert fixtures.backend is not None, "proxy scenarios set backend=True"
    return proxy_site(fixtures.backend)


def _middleware(fixtures: Fixtures) -> Site:
    assert fixtures.backend is not None, "proxy scenarios set backend=True"
    return middleware_site(fixtures.backend)


def _experiment(fixtures: Fixtures) -> Site:
    assert fixtures.backend is not None, "proxy scenarios set backend=True"
    return experiment_site(fixtures.backend)


def experiment_cookie() -> str:
    """The Cookie header of EXPERIMENT_VISITOR, their variant already in ``xp``."""
    from gateway.config.experiments import Experiment
    from gateway.experiments.assign import Assigner

    variant = Assigner(Experiment.model_validate_json(orjson.dumps(EXPERIMENT))).variant_of(
        EXPERIMENT_VISITOR
    )
    return f"vid={EXPERIMENT_VISITOR}; sid={EXPERIMENT_VISITOR}; xp=checkout={variant}"


def _cached(fixtures: Fixtures) -> Site:
    assert fixtures.backend is not None, "proxy scenarios set backend=True"
    return cached_site(fixtures.backend)


def _static(fixtures: Fixtures) -> Site:
    return static_site(fixtures.files)


def _proxy(
    name: str,
    summary: str,
    path: str,
    expected: bytes,
    connections: int | None = None,
    tls: bool = False,
) -> Scenario:
    return Scenario(
        name,
        summary,
        site=_proxied,
        path=path,
        expected_body=expected,
        backend=True,
        connections=connections,
        tls=tls,
    )


def _static_file(name: str, summary: str, file: str) -> Scenario:
    return Scenario(name, summary, site=_static, path=f"/{file}", expected_body=file_bytes(file))


def tracker_body() -> bytes:
    """A typical tracker event: a small JSON object (about 150 bytes)."""
    return orjson.dumps(
        {
            "ename": "add_to_cart",
            "page": "/products/espresso-machine",
            "sku": "EM-1042",
            "price": 349.99,
            "currency": "EUR",
            "quantity": 1,
            "experiment": "checkout-b",
        }
    )


def segment_batch_body(size: int = SEGMENT_BATCH_SIZE) -> bytes:
    """A Segment /v1/batch body of ``size`` track calls, about 200 bytes each."""
    batch = [
        {
            "type": "track",
            "userId": f"user-{i:04d}",
            "event": "Product Viewed",
            "timestamp": "2026-11-25T18:00:00.000Z",
            "properties": {
                "product_id": f"sku-{i:05d}",
                "category": "coffee machines",
                "price": 349.99,
                "currency": "EUR",
                "position": i,
            },
        }
        for i in range(size)
    ]
    return orjson.dumps({"batch": batch, "sentAt": "2026-11-25T18:00:01.000Z"})


def basic_auth(user: str, password: str = "") -> str:
    """HTTP Basic; Segment's write-key auth is the key as user and no password."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def intake_batch_body(size: int = INTAKE_BATCH_SIZE) -> bytes:
    """What Rill's intake sink posts: NDJSON lines of about 250 bytes each."""
    attributes = {"service_name": "runtime", "install_id": "i-bench", "status": "ok"}
    lines = [
        orjson.dumps(
            {
                **attributes,
                "user_id": f"user-{i:04d}",
                "duration_ms": 12.5 + i,
                "event_id": f"0193a5b8-0000-7000-8000-{i:012d}",
                "event_time": "2026-12-02T06:00:00.123456789Z",
                "event_type": "behavioral",
                "event_name": "dashboard_viewed",
            }
        )
        for i in range(size)
    ]
    return b"\n".join(lines) + b"\n"


def snowplow_body(size: int = SNOWPLOW_BATCH_SIZE) -> bytes:
    """A tp2 POST as the trackers send it: page views and structured events, strings."""
    common = {"tv": "js-4.1.0", "tna": "sp", "aid": "shop", "p": "web", "sid": "s-bench",
              "vid": "2", "url": "https://shop.example/products/espresso", "page": "Espresso",
              "res": "1920x1080", "lang": "en-US"}  # fmt: skip
    structured = {"se_ca": "shop", "se_ac": "add", "se_va": "349.99"}
    events = [
        {
            **common,
            "e": "se" if i % 2 else "pv",
            "eid": f"5f8a3c1e-2b4d-4e6f-8a9b-{i:012d}",
            "duid": f"d-{i:04d}",
            "dtm": str(1764655200000 + i),
            "stm": str(1764655200100 + i),
            **(structured if i % 2 else {}),
        }
        for i in range(size)
    ]
    schema = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
    return orjson.dumps({"schema": schema, "data": events})


def _tracker_post(name: str, summary: str, delivery: Delivery) -> Scenario:
    return Scenario(
        name,
        summary,
        site=lambda _: tracker_site(delivery),
        path="/tr/v1/src/bench",
        method="POST",
        body=tracker_body(),
        headers={"Content-Type": "application/json"},
        status=204,
        events_per_request=1,
        delivery=delivery,
    )


def _segment_batch(name: str, summary: str, delivery: Delivery) -> Scenario:
    return Scenario(
        name,
        summary,
        site=lambda _: segment_site(delivery),
        path="/v1/batch",
        method="POST",
        body=segment_batch_body(),
        headers={"Content-Type": "application/json", "Authorization": basic_auth(WRITE_KEY)},
        expected_body=SEGMENT_SUCCESS.encode(),
        events_per_request=SEGMENT_BATCH_SIZE,
        delivery=delivery,
    )


def _intake_batch(name: str, summary: str, delivery: Delivery) -> Scenario:
    return Scenario(
        name,
        summary,
        site=lambda _: intake_site(delivery),
        path="/intake",
        method="POST",
        body=intake_batch_body(),
        headers={"Authorization": basic_auth(INTAKE_USER, INTAKE_PASSWORD)},
        status=204,
        events_per_request=INTAKE_BATCH_SIZE,
        delivery=delivery,
    )


def _snowplow_post(name: str, summary: str, delivery: Delivery) -> Scenario:
    return Scenario(
        name,
        summary,
        site=lambda _: snowplow_site(delivery),
        path="/com.snowplowanalytics.snowplow/tp2",
        method="POST",
        body=snowplow_body(),
        headers={"Content-Type": "application/json; charset=UTF-8"},
        expected_body=b"ok",
        events_per_request=SNOWPLOW_BATCH_SIZE,
        delivery=delivery,
    )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "hello",
        "a fixed response from memory: gateway respond, nginx return, Caddy respond",
        site=_hello,
        expected_body=HELLO_BODY.encode(),
    ),
    _proxy(
        "proxy_small",
        "reverse proxy to an nginx backend on loopback, small response",
        SMALL_PATH,
        BACKEND_BODY.encode(),
    ),
    Scenario(
        "proxy_visitor",
        "proxy_small for a returning visitor: the cookies proxy_experiment sends, no experiment",
        site=_proxied,
        path=SMALL_PATH,
        headers={"Cookie": experiment_cookie()},
        expected_body=BACKEND_BODY.encode(),
        backend=True,
    ),
    Scenario(
        "proxy_experiment",
        "proxy_small for a returning visitor in a two-variant experiment (its vid, sid and "
        "xp cookies sent): assignment, the variant header, the cookies",
        site=_experiment,
        path=SMALL_PATH,
        headers={"Cookie": experiment_cookie()},
        expected_body=BACKEND_BODY.encode(),
        backend=True,
    ),
    Scenario(
        "proxy_middleware",
        "proxy_small's path with a security header, an IP allow list and gzip of 10 KiB JSON",
        site=_middleware,
        path="/10k.json",
        headers={"Accept-Encoding": "gzip"},
        expected_body=file_bytes("10k.json"),
        expected_headers={"Content-Encoding": "gzip", "X-Frame-Options": "DENY"},
        backend=True,
    ),
    _proxy(
        "proxy_small_c1000",
        "proxy_small with 1,000 client connections",
        SMALL_PATH,
        BACKEND_BODY.encode(),
        connections=1000,
    ),
    _proxy(
        "proxy_1m",
        "reverse proxy to an nginx backend on loopback, 1 MiB file",
        "/1m.bin",
        file_bytes("1m.bin"),
    ),
    Scenario(
        "proxy_cached",
        "reverse proxy with a shared cache: the backend's 1 KiB answer says public, max-age "
        "3600; gateway route cache, nginx proxy_cache, Varnish (Caddy proxies every request)",
        site=_cached,
        path=CACHEABLE_PATH,
        expected_body=CACHEABLE_BODY.encode(),
        backend=True,
    ),
    Scenario(
        "proxy_cached_c1000",
        "proxy_cached with 1,000 client connections",
        site=_cached,
        path=CACHEABLE_PATH,
        expected_body=CACHEABLE_BODY.encode(),
        backend=True,
        connections=1000,
    ),
    _static_file("static_1k", "a 1 KiB static file", "1k.bin"),
    _static_file(
        "static_1m", "a 1 MiB static file (the gateway's in-memory cache limit)", "1m.bin"
    ),
    Scenario(
        "pixel",
        "tracking pixel: a GIF answered after enqueueing an event (pixels never wait)",
        site=lambda _: pixel_site(),
        path="/img/v1/campaign/c1/ename/open",
        expected_body=PIXEL,
        expected_bodies={"nginx": NGINX_EMPTY_GIF, "caddy": b""},
        events_per_request=1,
        delivery="fast",
    ),
    *(
        Scenario(
            name,
            summary,
            site=functools.partial(lambda enrich, _: mixed_pixel_site(enrich), enrich),
            path="/img/v1/campaign/c1/ename/open",
            expected_body=PIXEL,
            expected_bodies={"nginx": NGINX_EMPTY_GIF, "caddy": b""},
            events_per_request=1,
            delivery="fast",
            mix=visitor_mix(),
        )
        for name, summary, enrich in (
            (
                "pixel_mix",
                "pixel from a mix of visitors: about 300 agents, addresses over "
                "the City test database",
                None,
            ),
            (
                "pixel_enriched",
                "pixel_mix with every tracking.enrich step on (device, bots, "
                "geo and ASN, campaign, referrer, IP masking, consent, PII)",
                enrich_section(),
            ),
        )
    ),
    _tracker_post(
        "tracker_post",
        "durable tracker POST: answered once Kafka acknowledged the JSON event",
        "durable",
    ),
    _tracker_post(
        "tracker_post_fast",
        "fast tracker POST: answered once the JSON event is enqueued",
        "fast",
    ),
    _segment_batch(
        "segment_batch",
        f"durable Segment /v1/batch of {SEGMENT_BATCH_SIZE} track calls (about 20 KB)",
        "durable",
    ),
    _segment_batch(
        "segment_batch_fast",
        f"fast Segment /v1/batch of {SEGMENT_BATCH_SIZE} track calls (about 20 KB)",
        "fast",
    ),
    _intake_batch(
        "intake_batch",
        f"durable Rill intake POST of {INTAKE_BATCH_SIZE} NDJSON events (about 25 KB)",
        "durable",
    ),
    _snowplow_post(
        "snowplow_tp2",
        f"durable Snowplow tp2 POST of {SNOWPLOW_BATCH_SIZE} events, as a tracker flushes",
        "durable",
    ),
    Scenario(
        "redirect",
        "a short link answered 302 after enqueueing its click event",
        site=lambda _: redirect_site("go", REDIRECT_TARGET),
        path="/l/go",
        status=302,
        expected_headers={"Location": REDIRECT_TARGET},
        expected_bodies={"nginx": NGINX_302_BODY},
        events_per_request=1,
        delivery="fast",
    ),
    Scenario(
        "local_limited",
        "hello behind a local rate limit that never refuses (the per-worker buckets)",
        site=lambda _: limited_site(HELLO_BODY, None),
        expected_body=HELLO_BODY.encode(),
    ),
    Scenario(
        "redis_limited",
        "hello behind a shared rate limit on Redis that never refuses: a round trip each",
        site=lambda fixtures: limited_site(HELLO_BODY, fixtures.redis),
        expected_body=HELLO_BODY.encode(),
        redis=True,
    ),
    Scenario(
        "hello_https",
        "hello over HTTPS (TLS 1.3, P-256 certificate), keep-alive connections",
        site=_hello,
        expected_body=HELLO_BODY.encode(),
        tls=True,
    ),
    Scenario(
        "hello_https_new",
        "hello over HTTPS with Connection: close: a full TLS handshake per request",
        site=_hello,
        expected_body=HELLO_BODY.encode(),
        headers={"Connection": "close"},
        tls=True,
    ),
    _proxy(
        "proxy_https",
        "proxy_small over HTTPS (TLS to the client, plain HTTP to the backend)",
        SMALL_PATH,
        BACKEND_BODY.encode(),
        tls=True,
    ),
    Scenario(
        "hello_h2",
        "hello over HTTP/2 (TLS, ALPN h2): h2load, 10 streams per connection",
        site=_hello,
        expected_body=HELLO_BODY.encode(),
        tls=True,
        http2=True,
    ),
    Scenario(
        "proxy_h2",
        "proxy_small over HTTP/2 to the client (the backend stays HTTP/1.1)",
        site=_proxied,
        path=SMALL_PATH,
        expected_body=BACKEND_BODY.encode(),
        backend=True,
        tls=True,
        http2=True,
    ),
    Scenario(
        "static_h2",
        "a 1 KiB static file over HTTP/2",
        site=_static,
        path="/1k.bin",
        expected_body=file_bytes("1k.bin"),
        tls=True,
        http2=True,
    ),
    Scenario(
        "idle_10k",
        "memory per idle keep-alive connection (10,000 connections; 500 in --smoke)",
        measure="idle",
        site=_hello,
        expected_body=HELLO_BODY.encode(),
    ),
    Scenario(
        "worker_rss",
        "an idle worker's RSS serving the shipped config.json, after one request",
        measure="footprint",
        site=lambda _: shipped_site(),
        expected_body=HELLO_BODY.encode(),
    ),
)

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def select(names: str | None) -> tuple[Scenario, ...]:
    """The scenarios named in a comma list (all when None), in registry order.

    Raises ``KeyError`` naming the first unknown scenario.
    """
    if names is None:
        return SCENARIOS
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    for name in wanted:
        if name not in BY_NAME:
            raise KeyError(name)
    return tuple(scenario for scenario in SCENARIOS if scenario.name in wanted)
