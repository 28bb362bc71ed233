"""``tracking.enrich``: what the gateway adds to an event before it leaves (device, bot
verdict, geography, campaign, referrer) and what it takes away (IP bits, consent-denied
fields, PII in clear), plus tracking plans. Every step is off unless configured, so the
envelope is unchanged by default; ``sources`` turns steps off or changes a policy for
one ingestion source."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import ConfigIssue, Name, _check_cidrs, _Model

if TYPE_CHECKING:
    from gateway.config.root import Config

# What takes events in (the ``source`` record header); intake keeps its lines byte for
# byte and is never enriched.
SOURCES = ("tracker", "pixel", "redirect", "request", "segment", "snowplow")
STEPS = ("device", "bots", "geo", "campaign", "referrer", "ip", "consent", "pii", "plans")
Step = Literal["device", "bots", "geo", "campaign", "referrer", "ip", "consent", "pii", "plans"]
BotAction = Literal["flag", "drop", "route"]
IpPolicy = Literal["keep", "truncate", "remove"]
# A field of the envelope: a top-level member, or a path into properties, traits, context
# or extra ("properties.email", "context.traits.email").
_PATH = re.compile(r"(user_id|anonymous_id|ip|group_id|previous_id)|"
                   r"(properties|traits|context|extra)(\.[^.\s]+)+")  # fmt: skip


def _paths(value: tuple[str, ...]) -> tuple[str, ...]:
    for i, path in enumerate(value):
        if not _PATH.fullmatch(path):
            raise ValueError(
                f"[{i}] {path!r} is not user_id, anonymous_id, ip, group_id, previous_id or "
                "a dotted path under properties, traits, context or extra"
            )
    return value


class Device(_Model):
    """Browser, OS and device from User-Agent (ua-parser), refined by Client Hints."""

    cache_size: Annotated[int, Field(ge=16, le=1_000_000)] = 8192


class BotPattern(_Model):
    name: Name
    pattern: str  # a regular expression searched in the User-Agent (case-sensitive)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class Bots(_Model):
    """A verdict from the crawler-user-agents list, uap's spiders and the user's own
    patterns and IP ranges; checked for browser-origin events unless ``all_origins``."""

    action: BotAction = "flag"
    topic: str = "events-bots"  # where "route" sends them
    patterns: tuple[BotPattern, ...] = ()
    ip_ranges: tuple[str, ...] = ()
    all_origins: bool = False  # also server SDKs and apps (curl, python-requests, okhttp)

    @field_validator("ip_ranges")
    @classmethod
    def _ranges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_cidrs(value)


class Geo(_Model):
    """Geography and network from MaxMind-format databases the user supplies."""

    city_db: str | None = None  # GeoIP2/GeoLite2 City or Country
    asn_db: str | None = None  # GeoLite2 ASN (or an ISP database)
    coordinate_decimals: Annotated[int, Field(ge=0, le=6)] | None = None  # None: as stored
    # Server SDK events: the context.ip they name, else the request's address ("request")
    # or no geography at all ("context").
    server_ip: Literal["context", "request"] = "context"
    check_interval: Annotated[float, Field(gt=0, le=86400)] = 60.0  # file replaced?
    cache_size: Annotated[int, Field(ge=16, le=10_000_000)] = 65536

    @model_validator(mode="after")
    def _some_database(self) -> Geo:
        if self.city_db is None and self.asn_db is None:
            raise ValueError("needs city_db or asn_db")
        return self


class Campaign(_Model):
    """utm_* and click ids from the page URL (else the request's query)."""

    # Click-id parameter → the network it names.
    click_ids: Mapping[str, str] = Field(
        default_factory=lambda: {
            "gclid": "Google", "dclid": "DoubleClick", "msclkid": "Microsoft",
            "fbclid": "Facebook", "ttclid": "TikTok", "li_fat_id": "LinkedIn",
        }
    )  # fmt: skip


class Referrer(_Model):
    """The referrer's host and a medium from a built-in list and these hosts."""

    hosts: Mapping[str, Literal["search", "social", "email", "paid", "chatbot"]] = Field(
        default_factory=dict
    )
    internal: tuple[str, ...] = ()  # the site's own hosts (besides the page's)


class Ip(_Model):
    """What is left of the client address once the lookups are done."""

    policy: IpPolicy = "truncate"
    ipv4_prefix: Annotated[int, Field(ge=0, le=32)] = 24
    ipv6_prefix: Annotated[int, Field(ge=0, le=128)] = 48
    # A request header choosing the policy per request, honoured only from these callers.
    header: str | None = None
    trusted: tuple[str, ...] = ()

    @field_validator("trusted")
    @classmethod
    def _ranges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_cidrs(value)


class ConsentRule(_Model):
    category: str  # as in context.consent.categoryPreferences ("Advertising")
    action: Literal["drop", "strip"]
    fields: Annotated[tuple[str, ...], Field(max_length=64)] = ()  # what "strip" removes

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _paths(value)

    @model_validator(mode="after")
    def _strip_names_fields(self) -> ConsentRule:
        if self.action == "strip" and not self.fields:
            raise ValueError("strip needs fields")
        return self


class Consent(_Model):
    """Segment's consent categories, Global Privacy Control and Do Not Track."""

    rules: tuple[ConsentRule, ...] = ()
    # "opt_out": the signal denies every category a rule names.
    gpc: Literal["record", "opt_out"] = "record"
    dnt: Literal["record", "opt_out"] = "record"


class Pii(_Model):
    """Fields replaced by their salted HMAC-SHA256 (hex) before anything is kept."""

    salt: Annotated[str, Field(min_length=16)]
    fields: Annotated[tuple[str, ...], Field(min_length=1, max_length=64)]

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _paths(value)


class Plan(_Model):
    name: Name  # in violations and the metric's label
    event_type: str = "track"
    event_name: str
    schema_: Mapping[str, Any] | None = Field(default=None, alias="schema")
    schema_file: str | None = None
    mode: Literal["flag", "omit", "block"] = "flag"

    @model_validator(mode="after")
    def _one_schema(self) -> Plan:
        if (self.schema_ is None) == (self.schema_file is None):
            raise ValueError("give schema or schema_file")
        return self


class Plans(_Model):
    """JSON Schemas for events' properties, by type and name (and Iglu for Snowplow)."""

    plans: tuple[Plan, ...] = ()
    unplanned: Literal["allow", "block"] = "allow"
    # Iglu layout (vendor/name/jsonschema/1-0-0) for Snowplow self-describing events.
    iglu_dir: str | None = None


class SourceSettings(_Model):
    """One source's exceptions: steps off, and its own bot action and IP policy."""

    off: tuple[Step, ...] = ()
    bots: BotAction | None = None
    ip: IpPolicy | None = None


class Enrich(_Model):
    """Each step runs when its key is set, in this order: device, bots, geo, campaign,
    referrer, plans (lookups on the raw event), then ip, consent, pii."""

    device: Device | None = None
    bots: Bots | None = None
    geo: Geo | None = None
    campaign: Campaign | None = None
    referrer: Referrer | None = None
    ip: Ip | None = None
    consent: Consent | None = None
    pii: Pii | None = None
    plans: Plans | None = None
    sources: Mapping[str, SourceSettings] = Field(default_factory=dict)

    @field_validator("sources")
    @classmethod
    def _known(cls, value: Mapping[str, SourceSettings]) -> Mapping[str, SourceSettings]:
        for name in value:
            if name not in SOURCES:
                raise ValueError(f"{name!r} is not a source ({', '.join(SOURCES)})")
        return value

    @property
    def any_step(self) -> bool:
        return any(getattr(self, step) is not None for step in STEPS)


def checks(config: Config) -> Iterator[ConfigIssue]:
    """The databases and schema files can be read (and are what they claim to be)."""
    enrich = config.tracking.enrich
    if enrich is None:
        return
    if enrich.geo is not None:
        for key in ("city_db", "asn_db"):
            path = getattr(enrich.geo, key)
            if path is not None and (problem := database_issue(path, key)):
                yield ConfigIssue(f"tracking.enrich.geo.{key}", problem)
    if enrich.plans is not None:
        for i, plan in enumerate(enrich.plans.plans):
            if problem := schema_issue(plan):
                key = "schema_file" if plan.schema_file is not None else "schema"
                yield ConfigIssue(f"tracking.enrich.plans.plans[{i}].{key}", problem)
        iglu = enrich.plans.iglu_dir
        if iglu is not None and not os.path.isdir(iglu):
            yield ConfigIssue("tracking.enrich.plans.iglu_dir", "is not a directory")
    for source, settings in enrich.sources.items():
        for step in settings.off:
            if getattr(enrich, step) is None:
                yield ConfigIssue(f"tracking.enrich.sources.{source}.off", f"{step} is not on")


# The files are checked as the steps will read them (gateway.enrich.geo, .plans): the
# libraries are imported only when a config names such a file.


def open_reader(path: str) -> Any:
    """The database at ``path``, through the C extension; ValueError or OSError when it
    is not one."""
    import maxminddb

    reader = maxminddb.open_database(path, maxminddb.MODE_MMAP_EXT)
    reader.metadata()  # its metadata section read: a truncated file fails here
    reader.get("0.0.0.0")  # and a first walk of its tree
    return reader


def database_issue(path: str, key: str) -> str | None:
    """Why ``path`` is not a usable database for ``key`` (city_db or asn_db), if it is not."""
    try:
        reader = open_reader(path)
    except FileNotFoundError:
        return f"{path}: no such file"
    except (OSError, ValueError, RuntimeError) as exc:  # maxminddb's InvalidDatabaseError
        return f"{path}: not a MaxMind DB file ({exc})"
    kind = reader.metadata().database_type
    reader.close()
    wanted = "ASN" if key == "asn_db" else "City"
    if key == "asn_db" and "ASN" not in kind and "ISP" not in kind:
        return f"{path}: a {kind} database, not an ASN or ISP one"
    if key == "city_db" and not any(word in kind for word in ("City", "Country", "Enterprise")):
        return f"{path}: a {kind} database, not a {wanted} or Country one"
    return None


def load_schema(plan: Plan) -> Any:
    if plan.schema_file is None:
        return plan.schema_
    with open(plan.schema_file, encoding="utf-8") as handle:
        return json.load(handle)


def compile_schema(schema: Any) -> Any:
    import jsonschema_rs

    return jsonschema_rs.validator_for(schema, offline=True)  # never fetches a $ref


def schema_issue(plan: Plan) -> str | None:
    """Why ``plan``'s schema cannot be used, if it cannot."""
    try:
        schema = load_schema(plan)
    except OSError as exc:
        return f"{plan.schema_file}: cannot read ({exc.strerror})"
    except ValueError as exc:
        return f"{plan.schema_file}: not JSON ({exc})"
    if not isinstance(schema, dict):
        return "must be a JSON Schema object"
    try:
        compile_schema(schema)
    except Exception as exc:  # jsonschema_rs.ValidationError or ValueError: a bad schema
        return f"not a valid JSON Schema: {str(exc).splitlines()[0]}"
    return None
