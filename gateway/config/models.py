"""The gateway's configuration: typed, frozen models loaded once from config.json.

Loading validates everything up front and reports every problem with its key path
(``routes[1].match.path_prefix: must start with "/"``), so ``gateway check`` can
explain a broken file in one go. Nothing mutates a loaded :class:`Config`; a reload
builds a new one and swaps it whole.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.config.paths import ca_file_issue, directory_issue, writable_file_issue

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 §5.6.2 token
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_PATTERN = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be lowercase letters, digits, '-' or '_' (at most 64)")
    return value


# Names of listeners, routes and rules: they appear in metrics labels and log lines.
Name = Annotated[str, AfterValidator(_check_name)]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file: where it is and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The config could not be loaded; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{source}: {len(issues)} error(s)\n{lines}")


class _Model(BaseModel):
    # strict: a port written as "8080" or a flag written as 1 is a mistake, not a value.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _check_cidrs(value: tuple[str, ...]) -> tuple[str, ...]:
    for i, item in enumerate(value):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"[{i}] {item!r} is not an IP address or CIDR") from None
    return value


class TlsCertificate(_Model):
    """A PEM certificate chain and its private key."""

    cert: str
    key: str


_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


def _check_domains(value: tuple[str, ...]) -> tuple[str, ...]:
    for i, name in enumerate(value):
        if name.startswith("*."):
            raise ValueError(f"[{i}] {name!r}: wildcard names need DNS-01, which is not offered")
        if not _DNS_NAME.match(name) or "." not in name:
            raise ValueError(f"[{i}] {name!r} is not a lowercase DNS name with a dot")
    if len(set(value)) != len(value):
        raise ValueError("names must not repeat")
    return value


class AcmeEab(_Model):
    """External account binding (RFC 8555 §7.3.4), from the CA's account page."""

    kid: Annotated[str, Field(min_length=1)]
    hmac_key: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+=*$")]


class Acme(_Model):
    """Certificates obtained and renewed over ACME (RFC 8555), one per domain name."""

    directory: Annotated[str, Field(pattern=r"^https?://")] = (
        "https://acme-v02.api.letsencrypt.org/directory"
    )
    domains: Annotated[tuple[str, ...], Field(min_length=1), AfterValidator(_check_domains)]
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    agree_to_terms: bool = False
    challenge: Literal["http-01", "tls-alpn-01"] = "http-01"
    storage: str = "certs/acme"
    ca_bundle: str | None = None
    eab: AcmeEab | None = None
    key_type: Literal["ec256", "rsa2048"] = "ec256"
    renew_remaining: Annotated[float, Field(gt=0, lt=1)] = 1 / 3
    check_interval: Annotated[float, Field(gt=0, le=86400)] = 3600.0
    retry_min: Annotated[float, Field(gt=0)] = 60.0
    retry_max: Annotated[float, Field(gt=0)] = 6 * 3600.0
    order_timeout: Annotated[float, Field(gt=0, le=3600)] = 90.0


class Hsts(_Model):
    """Strict-Transport-Security (RFC 6797) on HTTPS answers for these hosts."""

    hosts: Annotated[tuple[str, ...], Field(min_length=1)]
    max_age: Annotated[int, Field(ge=0)] = 31536000
    include_subdomains: bool = False
    preload: bool = False

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, host in enumerate(value):
            if not _DNS_NAME.match(host.removeprefix("*.")):
                raise ValueError(f"[{i}] {host!r} is not a lowercase host name or *.domain")
        return value

    @model_validator(mode="after")
    def _preload(self) -> Hsts:
        # hstspreload.org's submission rules: browsers would ignore the request otherwise.
        if self.preload and (not self.include_subdomains or self.max_age < 31536000):
            raise ValueError("preload needs include_subdomains and max_age >= 31536000")
        return self

    @property
    def header(self) -> str:
        value = f"max-age={self.max_age}"
        if self.include_subdomains:
            value += "; includeSubDomains"
        if self.preload:
            value += "; preload"
        return value


class Tls(_Model):
    """Certificates for the ``tls`` listeners: from files (the first is the default) and
    over ACME."""

    certificates: tuple[TlsCertificate, ...] = ()
    acme: Acme | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    reload_interval: Annotated[float, Field(gt=0, le=86400)] = 5.0
    hsts: tuple[Hsts, ...] = ()


class Listener(_Model):
    """A plain-HTTP listening socket. ``admin`` listeners also serve reload and metrics."""

    name: Name
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)]
    admin: bool = False
    tls: bool = False
    redirect_to_https: Annotated[int, Field(ge=1, le=65535)] | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address such as 127.0.0.1, 0.0.0.0 or ::") from None
        return value

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback


class Timeouts(_Model):
    """Connection timeouts in seconds; together they bound a slow-loris client."""

    read_header: Annotated[float, Field(gt=0, le=3600)] = 10.0
    keepalive: Annotated[float, Field(gt=0, le=3600)] = 75.0
    read_body: Annotated[float, Field(gt=0, le=3600)] = 10.0


class Limits(_Model):
    """Per-request and per-worker limits with safe defaults."""

    max_header_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 8190
    max_headers: Annotated[int, Field(ge=8, le=1000)] = 100
    max_body_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = 1 << 20
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_concurrent_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    min_body_rate: Annotated[int, Field(ge=0, le=1 << 30)] = 240


class AccessLog(_Model):
    """JSON access log, one line per request."""

    enabled: bool = True
    path: str = "-"
    headers: bool = False


class Server(_Model):
    """Listeners, worker processes, timeouts, limits and proxy trust."""

    listeners: Annotated[tuple[Listener, ...], Field(min_length=1)]
    workers: Annotated[int, Field(ge=1, le=256)] | None = None
    shutdown_timeout: Annotated[float, Field(ge=0, le=3600)] = 15.0
    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()
    trusted_proxies: tuple[str, ...] = ()
    client_ip_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    builtin_prefix: str = "/_gateway/"
    public_metrics: bool = False
    access_log: AccessLog = AccessLog()

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_cidrs(value)

    @field_validator("builtin_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not (value.startswith("/") and value.endswith("/") and len(value) > 2):
            raise ValueError('must start and end with "/", e.g. "/_gateway/"')
        return value

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


class Match(_Model):
    """Which requests a route takes: any of ``hosts`` (empty: any) and a path prefix."""

    hosts: tuple[str, ...] = ()
    path_prefix: str = "/"

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, host in enumerate(value):
            if not _HOST_PATTERN.match(host):
                raise ValueError(
                    f"[{i}] {host!r} is not a lowercase host name or '*.domain' wildcard"
                )
        return value

    @field_validator("path_prefix")
    @classmethod
    def _path_prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError('must start with "/"')
        if any(c in value for c in "?#\\") or any(ord(c) < 0x21 for c in value):
            raise ValueError("must be a plain path: no query, fragment, space or control character")
        return value


class Respond(_Model):
    """A fixed response from memory: health pages, maintenance pages, hello world."""

    status: Annotated[int, Field(ge=200, le=599)] = 200
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = Field(default_factory=dict)

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        if any(c in value for c in "\r\n\0"):
            raise ValueError("must not contain CR, LF or NUL")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for name, header_value in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if any(c in header_value for c in "\r\n\0"):
                raise ValueError(f"{name!r} value must not contain CR, LF or NUL")
        return value


EVENT_TYPES = (
    "track",
    "identify",
    "page",
    "screen",
    "group",
    "alias",
    "pixel",
    "redirect",
    "request",
)
_UPSTREAM = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?$")
_ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(:[0-9]{1,5})?$")
_KEY_PARTS = ("client_ip", "route", "write_key", "header:<Name>")
_HOST_AND_PORT = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})$")


class RateLimitRule(_Model):
    """A named rate limit: ``rate`` requests per ``period`` seconds, ``burst`` at once."""

    name: Name
    rate: Annotated[float, Field(gt=0, le=1e9)]
    period: Annotated[float, Field(gt=0, le=86400)] = 1.0
    burst: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    key: Annotated[tuple[str, ...], Field(min_length=1)] = ("client_ip",)
    ipv6_prefix: Annotated[int, Field(ge=1, le=128)] = 64
    exempt: tuple[str, ...] = ()
    dry_run: bool = False
    max_keys: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000

    @field_validator("key")
    @classmethod
    def _key(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, part in enumerate(value):
            header = part.removeprefix("header:")
            if part in _KEY_PARTS[:3] or (header != part and _TOKEN.match(header)):
                continue
            raise ValueError(f"[{i}] {part!r} is not one of {', '.join(_KEY_PARTS)}")
        return value

    @field_validator("exempt")
    @classmethod
    def _exempt(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_cidrs(value)

    @property
    def effective_burst(self) -> int:
        """``burst``, or by default one period's worth of requests."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate))


class Kafka(_Model):
    """The Kafka producer of each worker (aiokafka), tuned for throughput."""

    bootstrap_servers: Annotated[tuple[str, ...], Field(min_length=1)]
    topic: str = "events"
    topics: Mapping[str, str] = Field(default_factory=dict)
    client_id: str = "edge-gateway"
    acks: Literal["all", 1, 0] = "all"
    compression: Literal["none", "gzip", "lz4", "zstd"] = "none"
    # The gateway hands aiokafka whole batches; lingering would only delay them.
    linger_ms: Annotated[int, Field(ge=0, le=10_000)] = 0
    batch_bytes: Annotated[int, Field(ge=1024, le=64 << 20)] = 1 << 20
    enable_idempotence: bool = False
    ack_timeout: Annotated[float, Field(gt=0, le=600)] = 5.0
    dead_letter_topic: str = "events-dead-letter"

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, server in enumerate(value):
            match = _HOST_AND_PORT.match(server)
            if match is None or not 0 < int(match.group(1)) < 65536:
                raise ValueError(f"[{i}] {server!r} is not host:port")
        return value

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for event_type in value:
            if event_type not in EVENT_TYPES:
                raise ValueError(f"{event_type!r} is not an event type ({', '.join(EVENT_TYPES)})")
        return value

    def topic_for(self, event_type: str) -> str:
        if event_type == "dead_letter":
            return self.dead_letter_topic
        return self.topics.get(event_type, self.topic)


class Spool(_Model):
    """The local, checksummed, segment-rotated log under the Kafka producer."""

    dir: str = "spool"
    segment_bytes: Annotated[int, Field(ge=4096, le=1 << 30)] = 16 << 20
    max_bytes: Annotated[int, Field(ge=4096, le=1 << 40)] = 1 << 30


class Cookie(_Model):
    name: str
    max_age: Annotated[int, Field(ge=1, le=10 * 365 * 86400)]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TOKEN.match(value):  # RFC 6265 §4.1.1: cookie-name is a token
            raise ValueError(f"{value!r} is not a cookie name (letters, digits, !#$%&'*+-.^_`|~)")
        return value


class Cookies(_Model):
    """First-party visitor (long-lived) and session (sliding) cookies."""

    enabled: bool = True
    visitor: Cookie = Cookie(name="vid", max_age=2 * 365 * 86400)
    session: Cookie = Cookie(name="sid", max_age=30 * 60)
    domain: str | None = None
    path: str = "/"
    same_site: Literal["Lax", "Strict", "None"] = "Lax"
    secure: bool = False
    http_only: bool = True


class Cors(_Model):
    """Which browser origins may call the tracking endpoints (with cookies)."""

    allowed_origins: tuple[str, ...] = ()
    max_age: Annotated[int, Field(ge=0, le=86400)] = 600

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, origin in enumerate(value):
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"[{i}] {origin!r} is not an origin like https://app.example.com")
        return value


class Tracking(_Model):
    """How events are built and delivered."""

    delivery: Literal["durable", "fast"] = "durable"
    write_keys: tuple[str, ...] = ()
    cors: Cors = Cors()
    queue_size: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    queue_bytes: Annotated[int, Field(ge=1024, le=1 << 40)] = 64 << 20
    cookies: Cookies = Cookies()
    honor_dnt: bool = False
    truncate_ip: bool = False
    node: str | None = None


class RateLimits(_Model):
    """The named rules routes refer to by name."""

    rules: tuple[RateLimitRule, ...] = ()


class ProxyTimeouts(_Model):
    """Seconds: to connect, to the response head, between body reads."""

    connect: Annotated[float, Field(gt=0, le=600)] = 5.0
    first_byte: Annotated[float, Field(gt=0, le=3600)] = 60.0
    idle_read: Annotated[float, Field(gt=0, le=3600)] = 60.0


class PassiveHealth(_Model):
    failures: Annotated[int, Field(ge=1, le=1000)] = 3
    window: Annotated[float, Field(gt=0, le=3600)] = 10.0
    cooldown: Annotated[float, Field(gt=0, le=3600)] = 30.0


class ActiveHealth(_Model):
    path: str = "/"
    interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    timeout: Annotated[float, Field(gt=0, le=600)] = 2.0
    expect_status: tuple[int, int] = (200, 399)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError('must start with "/"')
        return value


class Proxy(_Model):
    """Reverse proxy to a pool of upstream targets."""

    upstreams: Annotated[tuple[str, ...], Field(min_length=1)]
    policy: Literal["round_robin", "least_conn", "random_two", "ip_hash", "header_hash"] = (
        "round_robin"
    )
    hash_header: str | None = None
    strip_prefix: bool = False
    rewrite_prefix: str | None = None
    host_header: str | None = None
    forwarded: bool = False
    via: bool = False
    verify_tls: bool = True
    ca_file: str | None = None
    strict_paths: bool = True
    max_connections_per_target: Annotated[int, Field(ge=1, le=100_000)] = 256
    try_duration: Annotated[float, Field(ge=0, le=600)] = 5.0
    max_tries: Annotated[int, Field(ge=1, le=20)] = 3
    websocket_idle_timeout: Annotated[float, Field(gt=0, le=86400)] = 300.0
    timeouts: ProxyTimeouts = ProxyTimeouts()
    passive_health: PassiveHealth = PassiveHealth()
    active_health: ActiveHealth | None = None

    @field_validator("upstreams")
    @classmethod
    def _upstreams(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, url in enumerate(value):
            if not _UPSTREAM.match(url):
                raise ValueError(f"[{i}] {url!r} is not an http:// or https:// URL with a host")
        return value

    @field_validator("rewrite_prefix")
    @classmethod
    def _rewrite(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError('must start with "/"')
        return value


class CacheControlRule(_Model):
    """``Cache-Control`` for files whose name matches ``glob`` (first match wins)."""

    glob: str
    value: str

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        if any(c in value for c in "\r\n\0"):
            raise ValueError("must not contain CR, LF or NUL")
        return value


class StaticCache(_Model):
    """Bounds of the in-memory cache of hot files (per route and worker)."""

    max_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = 64 << 20
    max_file_bytes: Annotated[int, Field(ge=0, le=1 << 30)] = 1 << 20
    check_interval: Annotated[float, Field(ge=0, le=3600)] = 1.0


class Static(_Model):
    """Files under ``root``."""

    root: str
    index: tuple[str, ...] = ("index.html",)
    spa_fallback: str | None = None
    listing: bool = False
    allow_hidden: bool = False
    follow_symlinks_outside: bool = False
    compress: bool = True
    compress_min_bytes: Annotated[int, Field(ge=0, le=1 << 30)] = 1024
    cache_control: tuple[CacheControlRule, ...] = ()
    cache: StaticCache = StaticCache()


class Redirects(_Model):
    """Short links and ad-hoc signed redirects."""

    signing_keys: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allow_ip_literals: bool = False
    admin_token: str | None = None
    topic: str = "links"
    file: str = "links.jsonl"
    links: tuple[dict[str, Any], ...] = ()

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, host in enumerate(value):
            if not _HOST_PATTERN.match(host):
                raise ValueError(f"[{i}] {host!r} is not a lowercase host name or '*.domain'")
        return value

    @field_validator("admin_token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters")
        return value


class RedirectRoute(_Model):
    """Short links at ``<prefix>/<slug>``; ad-hoc signed ones at ``<prefix>/r``."""

    adhoc: bool = True


class Collect(_Model):
    """The tracker endpoints under the route's prefix: tr/v1, str/v1 and img/v1."""

    endpoints: tuple[Literal["tr", "str", "img"], ...] = ("tr", "str", "img")


class Segment(_Model):
    """The Segment HTTP API under the route's prefix: /v1/track, /v1/batch, ..."""

    enabled: bool = True


class Route(_Model):
    """One entry of the ordered route table: a match and exactly one handler."""

    name: Name
    match: Match = Match()
    max_body_bytes: Annotated[int, Field(ge=0, le=1 << 40)] | None = None
    rate_limits: tuple[str, ...] = ()
    rate_limit_mode: Literal["reject", "flag"] = "reject"
    track: bool = False
    delivery: Literal["durable", "fast"] | None = None
    respond: Respond | None = None
    collect: Collect | None = None
    segment: Segment | None = None
    proxy: Proxy | None = None
    static: Static | None = None
    redirect: RedirectRoute | None = None


class Config(_Model):
    """The whole gateway configuration."""

    server: Server
    routes: tuple[Route, ...] = ()
    # Capabilities that later versions add; present in a file they are an error, never ignored.
    kafka: Kafka | None = None
    spool: Spool = Spool()
    tracking: Tracking = Tracking()
    tls: Tls | None = None
    rate_limits: RateLimits = RateLimits()
    redirects: Redirects | None = None


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute ``${VAR}`` references, validate and freeze a config file."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(source, [ConfigIssue("", f"cannot read: {exc.strerror}")]) from None
    return parse_config(raw, source=source, env=os.environ if env is None else env)


def parse_config(raw: bytes, *, source: str = "<config>", env: Mapping[str, str]) -> Config:
    """Validate config JSON; raise :class:`ConfigError` listing every problem."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(source, [ConfigIssue("", f"invalid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue("", "must be a JSON object")])

    issues: list[ConfigIssue] = list(_duplicate_keys(raw))
    data = _substitute_env(data, "", env, issues)
    try:
        # Validate from JSON text, not Python objects: strict JSON mode keeps arrays valid
        # for tuple fields while still rejecting "8080" for a port.
        config = Config.model_validate_json(orjson.dumps(data), strict=True)
    except ValidationError as exc:
        issues.extend(_issues_from(exc))
        raise ConfigError(source, issues) from None
    issues.extend(_cross_checks(config))
    if issues:
        raise ConfigError(source, issues)
    return config


_DUPLICATES = "\0duplicates"  # where the parse below notes an object's repeated keys


def _note_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    repeated: list[str] = []
    for key, item in pairs:
        if key in value and key not in repeated:
            repeated.append(key)
        value[key] = item
    if repeated:
        value[_DUPLICATES] = repeated
    return value


def _duplicate_keys(raw: bytes) -> Iterator[ConfigIssue]:
    """A key given twice in one object: JSON parsers keep the last silently, which hides
    an edit that did not take. (orjson cannot report them; this parse runs once.)"""
    import json

    def walk(value: Any, path: str) -> Iterator[ConfigIssue]:
        if isinstance(value, dict):
            for key in value.pop(_DUPLICATES, ()):
                yield ConfigIssue(_join(path, key), "given more than once (the last would win)")
            for key, item in value.items():
                yield from walk(item, _join(path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, f"{path}[{i}]")

    yield from walk(json.loads(raw, object_pairs_hook=_note_duplicates), "")


def _substitute_env(
    value: Any, path: str, env: Mapping[str, str], issues: list[ConfigIssue]
) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                issues.append(ConfigIssue(path, f"environment variable {name} is not set"))
                return ""
            return env[name]

        return _ENV_REF.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, _join(path, k), env, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, f"{path}[{i}]", env, issues) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not key:
        return path
    return f"{path}.{key}" if path else key


def _issues_from(exc: ValidationError) -> Iterator[ConfigIssue]:
    errors = exc.errors(include_url=False)
    inner = {error["loc"][:n] for error in errors for n in range(1, len(error["loc"]))}
    for error in errors:
        path = ""
        for part in error["loc"]:
            path = _join(path, part)
        kind = error["type"]
        if kind == "too_short" and error["loc"] in inner:
            continue  # pydantic drops the bad items, then also calls the list too short
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "is required"
        else:
            message = error["msg"].removeprefix("Value error, ")
        # A list item's own message names its index ("[1] 'x' is not ..."): attach it.
        if message.startswith("[") and "]" in message:
            index, _, rest = message.partition("] ")
            path, message = f"{path}{index}]", rest
        yield ConfigIssue(path, message)


def _cross_checks(config: Config) -> Iterator[ConfigIssue]:
    """Checks that span several keys, each reported at the key that must change."""
    seen_names: dict[str, int] = {}
    seen_addresses: dict[tuple[str, int], int] = {}
    for i, listener in enumerate(config.server.listeners):
        path = f"server.listeners[{i}]"
        if listener.name in seen_names:
            yield ConfigIssue(
                f"{path}.name",
                f"duplicate listener name {listener.name!r} "
                f"(also server.listeners[{seen_names[listener.name]}])",
            )
        seen_names.setdefault(listener.name, i)
        address = (listener.host, listener.port)
        if listener.port and address in seen_addresses:
            yield ConfigIssue(
                f"{path}.port",
                f"{listener.host}:{listener.port} is already used by "
                f"server.listeners[{seen_addresses[address]}]",
            )
        seen_addresses.setdefault(address, i)
        if listener.tls and config.tls is None:
            yield ConfigIssue(f"{path}.tls", "needs a top-level tls section with certificates")
        if listener.admin and not listener.is_loopback:
            yield ConfigIssue(f"{path}.host", "an admin listener must bind a loopback address")

    access_log = config.server.access_log.path
    if access_log != "-" and (problem := writable_file_issue(access_log)):
        yield ConfigIssue("server.access_log.path", problem)
    if problem := directory_issue(config.spool.dir):
        yield ConfigIssue("spool.dir", problem)

    if config.tls is not None:
        from gateway.tls.store import CertificateError, context_for, names_of

        acme = config.tls.acme
        if not config.tls.certificates and acme is None:
            yield ConfigIssue("tls", "needs certificates, or acme to obtain them")
        if acme is not None:
            if not acme.agree_to_terms:
                yield ConfigIssue(
                    "tls.acme.agree_to_terms", "must be true: the CA's terms of service apply"
                )
            if acme.retry_max < acme.retry_min:
                yield ConfigIssue("tls.acme.retry_max", "must be at least retry_min")
            if acme.ca_bundle is not None and not os.path.isfile(acme.ca_bundle):
                yield ConfigIssue("tls.acme.ca_bundle", f"{acme.ca_bundle}: no such file")
            plain = [lst for lst in config.server.listeners if not lst.tls]
            secure = [lst for lst in config.server.listeners if lst.tls]
            if acme.challenge == "http-01" and not plain:
                yield ConfigIssue(
                    "tls.acme.challenge",
                    "http-01 needs a plain-HTTP listener (on port 80 for a public CA)",
                )
            if acme.challenge == "tls-alpn-01" and not secure:
                yield ConfigIssue(
                    "tls.acme.challenge",
                    "tls-alpn-01 needs a tls listener (on port 443 for a public CA)",
                )

        for i, pair in enumerate(config.tls.certificates):
            try:
                names_of(pair.cert)
                context_for(pair, config.tls)
            except CertificateError as exc:
                yield ConfigIssue(f"tls.certificates[{i}]", str(exc))

    if config.redirects is not None:
        from gateway.links.model import Link

        if config.kafka is None and (problem := writable_file_issue(config.redirects.file)):
            yield ConfigIssue("redirects.file", problem)

        for i, raw in enumerate(config.redirects.links):
            try:
                Link.model_validate_json(orjson.dumps(raw))
            except ValidationError as exc:
                for issue in _issues_from(exc):
                    yield ConfigIssue(_join(f"redirects.links[{i}]", issue.path), issue.message)

    rule_names: dict[str, int] = {}
    for i, rule in enumerate(config.rate_limits.rules):
        if rule.name in rule_names:
            yield ConfigIssue(
                f"rate_limits.rules[{i}].name",
                f"duplicate rule name {rule.name!r} "
                f"(also rate_limits.rules[{rule_names[rule.name]}])",
            )
        rule_names.setdefault(rule.name, i)

    route_names: dict[str, int] = {}
    for i, route in enumerate(config.routes):
        path = f"routes[{i}]"
        if route.name in route_names:
            yield ConfigIssue(
                f"{path}.name",
                f"duplicate route name {route.name!r} (also routes[{route_names[route.name]}])",
            )
        route_names.setdefault(route.name, i)
        kinds = ("respond", "collect", "segment", "proxy", "static", "redirect")
        handlers = [h for h in kinds if getattr(route, h) is not None]
        if len(handlers) != 1:
            yield ConfigIssue(
                path,
                "needs exactly one handler: one of respond, collect, segment, proxy, static, "
                "redirect",
            )
        if route.redirect is not None and config.redirects is None:
            yield ConfigIssue(f"{path}.redirect", "needs a top-level redirects section")
        if route.static is not None and not os.path.isdir(route.static.root):
            yield ConfigIssue(f"{path}.static.root", f"{route.static.root!r} is not a directory")
        proxy = route.proxy
        if proxy is not None and proxy.ca_file and (problem := ca_file_issue(proxy.ca_file)):
            yield ConfigIssue(f"{path}.proxy.ca_file", problem)
        if proxy is not None and proxy.policy == "header_hash" and not proxy.hash_header:
            yield ConfigIssue(f"{path}.proxy.hash_header", "is required by policy header_hash")
        if route.segment is not None and route.segment.enabled and not config.tracking.write_keys:
            yield ConfigIssue(f"{path}.segment", "needs tracking.write_keys to check callers")
        for j, rule_name in enumerate(route.rate_limits):
            if rule_name not in rule_names:
                known = ", ".join(rule_names) or "none defined in rate_limits.rules"
                yield ConfigIssue(
                    f"{path}.rate_limits[{j}]", f"unknown rule {rule_name!r} (known: {known})"
                )
        if route.match.path_prefix.startswith(config.server.builtin_prefix):
            yield ConfigIssue(
                f"{path}.match.path_prefix",
                f"is inside server.builtin_prefix {config.server.builtin_prefix!r}",
            )
