"""The enrichment step the event builder calls for every event: plain objects in, the
envelope's new members and changed fields out (no socket, no await).

Order, as Snowplow's enrich keeps it: the lookups that need the raw address and agent
(device, bots, geography), then campaign and referrer, the tracking plan, and last what
takes data away: the address masked, consent applied, PII hashed. What an event is
withheld for (a bot to drop, consent denied) or routed to (bots, a blocked plan) is
decided here and carried out by the sink and the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.config.enrich import Enrich, SourceSettings
from gateway.enrich.bots import BotDetector
from gateway.enrich.campaign import Referrers, campaign, page_query
from gateway.enrich.device import DeviceParser
from gateway.enrich.geo import GeoLookup
from gateway.enrich.plans import TrackingPlans
from gateway.enrich.privacy import (
    SNOWPLOW_PARAMETERS,
    Hasher,
    Paths,
    denied_categories,
    masker,
    remove,
)
from gateway.middleware.access import IPFilter

# Segment libraries that run in a browser or an app; any other is a server SDK.
BROWSER_LIBRARIES = frozenset({"analytics.js", "analytics-next", "RudderLabs JavaScript SDK"})
APP_LIBRARIES = frozenset({"analytics-ios", "analytics-android", "analytics-kotlin",
                           "analytics-swift", "analytics-react-native", "analytics-flutter",
                           "RudderLabs Android SDK", "RudderLabs iOS SDK"})  # fmt: skip
_NO_SETTINGS = SourceSettings()


@dataclass(slots=True)
class Added:
    """What enrichment adds to one event and how it changed it. ``members``: the
    envelope's fields as they leave (user_id, anonymous_id, ip, properties, traits,
    context, extra, group_id, previous_id)."""

    members: dict[str, Any]
    device: msgspec.Raw | None = None
    bot: msgspec.Raw | None = None
    geo: msgspec.Raw | None = None
    campaign: dict[str, Any] | None = None
    referrer: dict[str, Any] | None = None
    consent: dict[str, Any] | None = None
    violations: list[dict[str, Any]] | None = None
    withheld: str = ""  # why the event is not sent: "bot", "consent"
    topic: str = ""  # where it goes instead of its type's topic


def origin(source: str, context: Any) -> str:
    """browser, app or server: what made the event. Bots are looked for in browsers'
    events only (a server SDK's python-requests is not a bot)."""
    if source == "segment":
        library = context.get("library") if isinstance(context, dict) else None
        name = library.get("name") if isinstance(library, dict) else None
        if name in BROWSER_LIBRARIES:
            return "browser"
        if name in APP_LIBRARIES:
            return "app"
        page = isinstance(context, dict) and "userAgent" in context and "page" in context
        return "browser" if page else "server"
    if source == "snowplow":
        platform = context.get("platform") if isinstance(context, dict) else None
        return "browser" if platform in (None, "web") else "server" if platform == "srv" else "app"
    return "browser"


class Enricher:
    def __init__(
        self,
        config: Enrich,
        *,
        legacy_truncate: bool = False,
        dead_letter_topic: str = "events-dead-letter",
        count: Callable[[str, tuple[str, ...]], None] = lambda name, labels: None,
        report_geo: Callable[[str, str], None] = lambda path, outcome: None,
    ) -> None:
        self.config = config
        self._count = count
        self._dead_letters = dead_letter_topic
        self.device = DeviceParser(config.device.cache_size) if config.device else None
        bots = config.bots
        self.bots = BotDetector(bots.patterns, bots.ip_ranges, 8192) if bots else None
        self.geo = GeoLookup(config.geo, report_geo) if config.geo else None
        referrer = config.referrer
        self.referrers = Referrers(referrer.hosts, referrer.internal) if referrer else None
        self.plans = TrackingPlans(config.plans) if config.plans else None
        ip = config.ip
        policy = ip.policy if ip else "truncate" if legacy_truncate else "keep"
        v4, v6 = (ip.ipv4_prefix, ip.ipv6_prefix) if ip else (24, 48)
        self._masks = {name: masker(name, v4, v6) for name in ("keep", "truncate", "remove")}
        self._policy = policy
        self._policy_header = ip.header if ip else None
        self._trusted = IPFilter(ip.trusted, ()) if ip and ip.trusted else None
        self.hasher = Hasher(config.pii.salt) if config.pii else None
        self._pii = Paths(config.pii.fields) if config.pii else None
        rules = config.consent.rules if config.consent else ()
        self._strips = {r.category: Paths(r.fields) for r in rules if r.action == "strip"}

    def country_of(self, ip: str | None) -> str | None:
        """The address's ISO country (None without geo or when unknown)."""
        return self.geo.country(ip) if self.geo is not None else None

    def device_type_of(self, user_agent: str, headers: Mapping[str, str] | None) -> str | None:
        """mobile, tablet, desktop, bot or other (None without the device step)."""
        return self.device.kind(user_agent, headers) if self.device is not None else None

    def intake_mask(self, ip: str) -> str | None:
        """The address as the ip policy leaves it, for Rill intake's client_ip header (its
        lines are not enriched: they stay byte for byte)."""
        return self._masks[self._policy](ip)

    def apply(
        self,
        source: str,
        event_type: str,
        event_name: str,
        request: Any,  # RequestFacts: ip, user_agent, referer, host, query, headers
        members: dict[str, Any],
    ) -> Added:
        config = self.config
        settings = config.sources.get(source, _NO_SETTINGS)
        off = settings.off
        added = Added(members)
        context = members.get("context")
        context = context if isinstance(context, dict) else None
        made_by = origin(source, context)
        headers = request.headers
        user_agent = _text(context, "userAgent") or (
            request.user_agent if made_by != "server" else ""
        )
        client_ip = members.get("ip")
        lookup_ip = _text(context, "ip") or _snowplow_ip(source, members)
        if lookup_ip is None and (made_by != "server" or _geo_uses_request(config)):
            lookup_ip = client_ip
        spider = False
        if self.device is not None and "device" not in off:
            added.device, spider = self.device.describe(user_agent, headers)
        if self.bots is not None and "bots" not in off:
            self._bots(added, source, settings, made_by, user_agent, lookup_ip, spider)
        if self.geo is not None and "geo" not in off:
            added.geo = self.geo.member(lookup_ip)
        page = context.get("page") if context is not None else None
        page = page if isinstance(page, dict) else {}
        properties = members.get("properties") or {}
        if config.campaign is not None and "campaign" not in off:
            url = page.get("url") or properties.get("url")
            query = page.get("search") or (page_query(url) if isinstance(url, str) else "")
            added.campaign = campaign(
                str(query).lstrip("?") or request.query, config.campaign.click_ids
            )
        if self.referrers is not None and "referrer" not in off:
            referrer = page.get("referrer") or properties.get("referrer") or request.referer
            url = page.get("url") or properties.get("url")
            page_host = _host(url) if isinstance(url, str) else request.host
            added.referrer = self.referrers.member(str(referrer), page_host)
        if self.plans is not None and "plans" not in off:
            self._plans(added, event_type, event_name, properties)
        if "ip" not in off:
            self._mask(added, source, settings, client_ip, headers)
        if config.consent is not None and "consent" not in off:
            self._consent(added, headers, context)
        if self._pii is not None and self.hasher is not None and "pii" not in off:
            self._hash(added, source)
        return added

    def _bots(
        self,
        added: Added,
        source: str,
        settings: SourceSettings,
        made_by: str,
        user_agent: str,
        ip: str | None,
        spider: bool,
    ) -> None:
        assert self.bots is not None and self.config.bots is not None
        if made_by != "browser" and not self.config.bots.all_origins:
            added.bot = self.bots.not_checked
            return
        added.bot, is_bot = self.bots.verdict(user_agent, ip, spider)
        if not is_bot:
            return
        action = settings.bots or self.config.bots.action
        self._count("bots", (source, action))
        if action == "drop":
            added.withheld = "bot"
        elif action == "route":
            added.topic = self.config.bots.topic

    def _plans(
        self, added: Added, event_type: str, event_name: str, properties: dict[str, Any]
    ) -> None:
        assert self.plans is not None
        verdict = self.plans.check(event_type, event_name, properties)
        if verdict is None:
            return
        added.violations = verdict.violations
        self._count("violations", (verdict.plan, verdict.mode))
        if verdict.properties is not None:
            added.members["properties"] = verdict.properties
        if verdict.blocked:
            added.topic = self._dead_letters

    def _mask(
        self,
        added: Added,
        source: str,
        settings: SourceSettings,
        client_ip: str | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        policy: str = settings.ip or self._policy
        header, trusted = self._policy_header, self._trusted
        if header is not None and headers is not None and trusted is not None:
            asked = headers.get(header)
            if asked in self._masks and client_ip and not trusted.refuses(client_ip):
                policy = asked  # a trusted caller's choice for this request
        if policy == "keep":
            return
        mask = self._masks[policy]
        members = added.members
        if client_ip is not None:
            members["ip"] = mask(client_ip)
        context = members.get("context")
        if isinstance(context, dict) and isinstance(context.get("ip"), str):
            members["context"] = {**context, "ip": mask(context["ip"])}
        extra = members.get("extra")
        if source == "snowplow" and isinstance(extra, dict) and isinstance(extra.get("ip"), str):
            members["extra"] = {**extra, "ip": mask(extra["ip"])}

    def _consent(self, added: Added, headers: Mapping[str, str] | None, context: Any) -> None:
        consent = self.config.consent
        assert consent is not None
        gpc = headers is not None and headers.get("Sec-GPC") == "1"
        dnt = headers is not None and headers.get("DNT") == "1"
        denied = denied_categories(context)
        if (gpc and consent.gpc == "opt_out") or (dnt and consent.dnt == "opt_out"):
            denied = [*denied, *(r.category for r in consent.rules if r.category not in denied)]
        added.consent = {"gpc": gpc, "dnt": dnt, "denied": denied}
        for rule in consent.rules:
            if rule.category not in denied:
                continue
            if rule.action == "drop":
                added.withheld = "consent"
                self._count("consent", (rule.category,))
                return
            self._strips[rule.category].apply(added.members, remove)

    def _hash(self, added: Added, source: str) -> None:
        assert self._pii is not None and self.hasher is not None
        members = added.members
        self._pii.apply(members, self.hasher)
        extra = members.get("extra")
        if source == "snowplow" and isinstance(extra, dict):
            changed = dict(extra)
            for name in self._pii.top:
                parameter = SNOWPLOW_PARAMETERS.get(name)
                if parameter is not None and changed.get(parameter) not in (None, ""):
                    changed[parameter] = self.hasher(changed[parameter])
            members["extra"] = changed


def _text(container: dict[str, Any] | None, key: str) -> str | None:
    if container is None:
        return None
    value = container.get(key)
    return value if isinstance(value, str) and value else None


def _snowplow_ip(source: str, members: dict[str, Any]) -> str | None:
    """A Snowplow tracker's own ``ip`` parameter: the address it speaks for."""
    extra = members.get("extra")
    return _text(extra, "ip") if source == "snowplow" and isinstance(extra, dict) else None


def _geo_uses_request(config: Enrich) -> bool:
    return config.geo is not None and config.geo.server_ip == "request"


def _host(url: str) -> str:
    rest = url.partition("://")[2]
    return rest.partition("/")[0].partition("?")[0].partition("#")[0]
