"""``kafka``, ``spool`` and ``tracking``: where events go and how visitors are told apart."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    Field,
    field_validator,
)

from gateway.config.base import (
    _TOKEN,
    ConfigIssue,
    _Model,
)
from gateway.config.enrich import Enrich
from gateway.config.paths import (
    ca_file_issue,
    certificate_pair_issue,
    directory_issue,
    token_file_issue,
)

if TYPE_CHECKING:
    from gateway.config.root import Config


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
    # Snowplow's event types beside the ones above (gateway.events.snowplow.TYPES).
    "page_ping",
    "transaction",
    "transaction_item",
    "experiment_exposure",  # gateway.experiments: a visitor shown a variant
)
_ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(:[0-9]{1,5})?$")
_HOST_AND_PORT = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})$")


_EVENT_TYPE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # what Kafka accepts as a topic name


def _check_topic(value: str) -> str:
    if not _TOPIC.match(value) or value in (".", ".."):
        raise ValueError(f"{value!r} is not a Kafka topic name (letters, digits, '.', '_', '-')")
    return value


class KafkaTls(_Model):
    """TLS to the brokers: the system's trust store unless ``ca_file``; with
    ``cert_file`` and ``key_file``, mutual TLS."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = None
    check_hostname: bool = True


class KafkaSasl(_Model):
    """SASL login to the brokers. PLAIN and SCRAM take ``username`` and ``password``;
    OAUTHBEARER reads its token from ``token_file``, again whenever the file changes."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
    username: str | None = None
    password: str | None = None
    token_file: str | None = None


class Kafka(_Model):
    """The Kafka clients of each worker (aiokafka): the event producer, tuned for
    throughput, and the link store's; all share ``tls`` and ``sasl``."""

    bootstrap_servers: Annotated[tuple[str, ...], Field(min_length=1)]
    topic: str = "events"
    topics: Mapping[str, str] = Field(default_factory=dict)
    client_id: str = "edge-gateway"
    acks: Literal["all", 1, 0] = "all"
    compression: Literal["none", "gzip", "lz4", "zstd"] = "none"
    # The gateway hands aiokafka whole batches; lingering would only delay them.
    linger_ms: Annotated[int, Field(ge=0, le=10_000)] = 0
    batch_bytes: Annotated[int, Field(ge=1024, le=64 << 20)] = 1 << 20
    # aiokafka's enable_idempotence: a batch retried after a lost answer is written once.
    idempotence: bool = False
    ack_timeout: Annotated[float, Field(gt=0, le=600)] = 5.0
    dead_letter_topic: str = "events-dead-letter"
    # true or {}: TLS with the system trust store; false or absent: none.
    tls: KafkaTls | bool = False
    sasl: KafkaSasl | None = None
    allow_plaintext_sasl: bool = False

    @property
    def tls_settings(self) -> KafkaTls | None:
        if self.tls is True:
            return KafkaTls()
        return self.tls or None

    @property
    def security_protocol(self) -> str:
        """What the two keys add up to, in Kafka's words."""
        tls = self.tls_settings is not None
        if self.sasl is None:
            return "SSL" if tls else "PLAINTEXT"
        return "SASL_SSL" if tls else "SASL_PLAINTEXT"

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
        for event_type, topic in value.items():
            # Ours (EVENT_TYPES) or an intake client's own (behavioral, metric, log, ...).
            if not _EVENT_TYPE.match(event_type):
                raise ValueError(f"{event_type!r} is not an event type name")
            _check_topic(topic)
        return value

    @field_validator("topic", "dead_letter_topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _check_topic(value)

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
    # Experiment assignments, readable by the page's JavaScript: "name=variant&...".
    experiments: Cookie = Cookie(name="xp", max_age=90 * 86400)
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
    enrich: Enrich | None = None  # device, bots, geography, privacy, plans (config/enrich)


def checks(config: Config) -> Iterator[ConfigIssue]:
    """The spool's directory can be used; Kafka's TLS files load and its SASL settings
    are complete and safe."""
    if problem := directory_issue(config.spool.dir):
        yield ConfigIssue("spool.dir", problem)
    if config.kafka is not None:
        yield from _kafka_producer(config.kafka)
        yield from _kafka_security(config.kafka)


def _kafka_producer(kafka: Kafka) -> Iterator[ConfigIssue]:
    if kafka.idempotence and kafka.acks != "all":
        # What the Java client and aiokafka require: a leader's lone ack is not enough to
        # know a retried batch was or was not written.
        yield ConfigIssue("kafka.idempotence", 'needs acks: "all"')


def _kafka_security(kafka: Kafka) -> Iterator[ConfigIssue]:
    tls = kafka.tls_settings
    if tls is not None:
        if tls.ca_file and (problem := ca_file_issue(tls.ca_file)):
            yield ConfigIssue("kafka.tls.ca_file", problem)
        if bool(tls.cert_file) != bool(tls.key_file):
            missing = "key_file" if tls.cert_file else "cert_file"
            yield ConfigIssue(f"kafka.tls.{missing}", "is required with the other (mutual TLS)")
        elif tls.cert_file and tls.key_file:
            problem = certificate_pair_issue(tls.cert_file, tls.key_file, tls.key_password)
            if problem:
                yield ConfigIssue("kafka.tls.cert_file", problem)
    sasl = kafka.sasl
    if sasl is None:
        return
    if sasl.mechanism == "OAUTHBEARER":
        if not sasl.token_file:
            yield ConfigIssue("kafka.sasl.token_file", "is required by OAUTHBEARER")
        elif problem := token_file_issue(sasl.token_file):
            yield ConfigIssue("kafka.sasl.token_file", problem)
        return
    for key in ("username", "password"):
        if not getattr(sasl, key):
            yield ConfigIssue(f"kafka.sasl.{key}", f"is required by {sasl.mechanism}")
    if sasl.mechanism == "PLAIN" and tls is None and not kafka.allow_plaintext_sasl:
        yield ConfigIssue(
            "kafka.sasl.mechanism",
            "PLAIN without kafka.tls sends the password in clear text: set kafka.tls, "
            "or allow_plaintext_sasl: true if the network is yours",
        )
