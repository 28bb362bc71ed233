"""The steps in order for one event (no socket): which address and agent each lookup
uses, what is masked, withheld, routed, stripped and hashed, and per-source settings."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import msgspec

from gateway.config.enrich import Enrich
from gateway.enrich.enricher import Added, Enricher, origin
from gateway.events.envelope import RequestFacts
from tests.enrich.agents import CHROME_HINTS, CHROME_WINDOWS, GOOGLEBOT, PYTHON_REQUESTS
from tests.enrich.test_geo import ASN, CITY

SALT = "pepper-pepper-pepper"
LONDON, LINKOPING = "81.2.69.142", "89.160.20.112"


def enricher(counted: list[tuple[str, tuple[str, ...]]] | None = None, **steps: Any) -> Enricher:
    config = Enrich.model_validate_json(json.dumps(steps))
    sink = counted if counted is not None else []
    return Enricher(
        config, dead_letter_topic="dead", count=lambda name, labels: sink.append((name, labels))
    )


def facts(
    ip: str | None = LONDON,
    agent: str = CHROME_WINDOWS,
    headers: dict[str, str] | None = None,
    referer: str = "",
    query: str = "",
) -> RequestFacts:
    return RequestFacts(ip, "POST", "t.shop.example", "/v1/t", query, agent, referer,
                        headers=headers or {})  # fmt: skip


def members(**given: Any) -> dict[str, Any]:
    fields = dict.fromkeys(("user_id", "anonymous_id", "ip", "properties", "traits", "context",
                            "extra", "group_id", "previous_id"))  # fmt: skip
    return {**fields, "properties": {}, **given}


def run(
    e: Enricher, source: str = "tracker", request: RequestFacts | None = None, **given: Any
) -> Added:
    request = request or facts()
    given.setdefault("ip", request.ip)
    return e.apply(source, "track", "Clicked", request, members(**given))


def raw(value: msgspec.Raw | None) -> Any:
    assert value is not None
    return json.loads(bytes(value))


def test_origin_of_each_source() -> None:
    assert origin("pixel", None) == origin("tracker", None) == "browser"
    assert origin("segment", {"library": {"name": "analytics.js"}}) == "browser"
    assert origin("segment", {"library": {"name": "analytics-ios"}}) == "app"
    assert origin("segment", {"library": {"name": "analytics-python"}}) == "server"
    assert origin("segment", {"userAgent": "x", "page": {}}) == "browser"  # an unknown web SDK
    assert origin("segment", None) == "server"
    assert origin("snowplow", {"platform": "web"}) == "browser"
    assert origin("snowplow", {"platform": "srv"}) == "server"
    assert origin("snowplow", {"platform": "mob"}) == "app"


def test_lookups_see_the_raw_address_and_the_event_leaves_masked() -> None:
    e = enricher(geo={"city_db": CITY}, ip={})  # ip: truncate to /24 and /48
    added = run(e, context={"ip": "2001:480:10::1"})
    assert raw(added.geo)["city"] == "San Diego"  # the address the client named
    assert added.members["ip"] == "81.2.69.0"
    assert added.members["context"] == {"ip": "2001:480:10::"}  # its /48
    assert raw(run(e).geo)["city"] == "London"  # else the request's own


def test_server_sdk_events_are_not_bot_checked_and_have_no_request_geography() -> None:
    e = enricher(bots={}, geo={"city_db": CITY}, device={})
    context = {"library": {"name": "analytics-python"}}
    added = run(e, "segment", facts(agent=PYTHON_REQUESTS), context=context)
    assert raw(added.bot) == {"is_bot": False, "name": None, "by": "not_checked",
                              "category": None}  # fmt: skip
    assert raw(added.geo)["city"] is None  # the SDK's server is not where the user is
    assert raw(added.device)["browser"] is None  # nor is its agent the user's
    forwarded = run(e, "segment", facts(agent=PYTHON_REQUESTS),
                    context={**context, "ip": LINKOPING, "userAgent": CHROME_WINDOWS})  # fmt: skip
    assert (raw(forwarded.geo)["city"], raw(forwarded.device)["browser"]) == ("Linköping", "Chrome")
    e = enricher(geo={"city_db": CITY, "server_ip": "request"})
    assert raw(run(e, "segment", context=context).geo)["city"] == "London"


def test_bot_actions_and_their_counts() -> None:
    counted: list[tuple[str, tuple[str, ...]]] = []
    e = enricher(counted, bots={"action": "drop"},
                 sources={"segment": {"bots": "route"}, "redirect": {"bots": "flag"}})  # fmt: skip
    crawler = facts(agent=GOOGLEBOT)
    assert run(e, "pixel", crawler).withheld == "bot"
    routed = run(e, "segment", crawler, context={"library": {"name": "analytics.js"}})
    assert (routed.withheld, routed.topic) == ("", "events-bots")
    flagged = run(e, "redirect", crawler)
    assert (flagged.withheld, flagged.topic, raw(flagged.bot)["is_bot"]) == ("", "", True)
    assert run(e, "pixel").withheld == ""  # a browser
    assert counted == [("bots", ("pixel", "drop")), ("bots", ("segment", "route")),
                       ("bots", ("redirect", "flag"))]  # fmt: skip


def test_client_hints_reach_the_device_step() -> None:
    added = run(enricher(device={}), request=facts(headers=CHROME_HINTS))
    assert raw(added.device)["os_version"] == "11"


def test_campaign_and_referrer_from_the_page_else_the_request() -> None:
    e = enricher(campaign={}, referrer={})
    context = {"page": {"url": "https://shop.example/?utm_source=ads&gclid=G1",
                        "referrer": "https://www.bing.com/search?q=shoes"}}  # fmt: skip
    added = run(e, "segment", context=context)
    assert added.campaign == {"source": "ads", "click_id": "G1", "network": "Google"}
    assert added.referrer == {"host": "bing.com", "medium": "search", "source": "Bing"}
    pixel = run(e, "pixel", facts(query="utm_medium=email", referer="https://mail.google.com/"))
    assert (pixel.campaign, pixel.referrer) == (
        {"medium": "email"}, {"host": "mail.google.com", "medium": "email", "source": "Gmail"},
    )  # fmt: skip
    tracker = run(e, properties={"url": "https://shop.example/a?utm_campaign=x",
                                 "referrer": "https://shop.example/b"})  # fmt: skip
    assert (tracker.campaign, tracker.referrer["medium"]) == ({"name": "x"}, "internal")
    direct = run(e, "segment", context={"page": {"url": "https://shop.example/"}})
    assert (direct.campaign, direct.referrer["medium"]) == ({}, "direct")


def test_consent_denied_drops_or_strips_and_gpc_can_opt_out() -> None:
    counted: list[tuple[str, tuple[str, ...]]] = []
    e = enricher(counted, consent={"gpc": "opt_out", "rules": [
        {"category": "Advertising", "action": "drop"},
        {"category": "Analytics", "action": "strip", "fields": ["ip", "traits.email",
                                                               "context.ip"]},
    ]})  # fmt: skip
    context = {"ip": LONDON, "consent": {"categoryPreferences": {"Analytics": False}}}
    stripped = run(e, "segment", context=context, traits={"email": "a@x", "plan": "pro"})
    assert stripped.withheld == ""
    assert (stripped.members["ip"], stripped.members["traits"]) == (None, {"plan": "pro"})
    assert stripped.members["context"] == {"consent": context["consent"]}
    assert stripped.consent == {"gpc": False, "dnt": False, "denied": ["Analytics"]}
    denied = {"consent": {"categoryPreferences": {"Advertising": False}}}
    assert run(e, "segment", context=denied).withheld == "consent"
    opted_out = run(e, request=facts(headers={"Sec-GPC": "1", "DNT": "1"}))
    assert (opted_out.withheld, opted_out.consent) == (
        "consent", {"gpc": True, "dnt": True, "denied": ["Advertising", "Analytics"]},
    )  # fmt: skip
    assert counted == [("consent", ("Advertising",)), ("consent", ("Advertising",))]
    recorded = run(enricher(consent={}), request=facts(headers={"DNT": "1"}))
    assert (recorded.withheld, recorded.consent) == (
        "", {"gpc": False, "dnt": True, "denied": []},
    )  # fmt: skip


def test_pii_is_hashed_last_everywhere_it_was_sent() -> None:
    e = enricher(pii={"salt": SALT, "fields": ["user_id", "traits.email"]},
                 consent={"rules": [{"category": "A", "action": "strip",
                                     "fields": ["traits.phone"]}]})  # fmt: skip

    def digest(value: str) -> str:
        return hmac.new(SALT.encode(), value.encode(), hashlib.sha256).hexdigest()

    added = run(e, "snowplow", user_id="jane", traits={"email": "j@x", "phone": "1"},
                extra={"uid": "jane", "e": "pv"}, context={"platform": "web"})  # fmt: skip
    assert added.members["user_id"] == digest("jane")
    assert added.members["traits"] == {"email": digest("j@x"), "phone": "1"}
    assert added.members["extra"] == {"uid": digest("jane"), "e": "pv"}


def test_a_trusted_caller_may_choose_the_ip_policy_per_request() -> None:
    e = enricher(ip={"policy": "truncate", "header": "X-IP-Policy", "trusted": ["10.0.0.0/8"]})
    trusted = facts(ip="10.1.2.3", headers={"X-IP-Policy": "keep"})
    assert run(e, request=trusted).members["ip"] == "10.1.2.3"
    assert run(e, request=facts(ip="10.1.2.3", headers={"X-IP-Policy": "remove"})).members[
        "ip"] is None  # fmt: skip
    stranger = facts(headers={"X-IP-Policy": "keep"})
    assert run(e, request=stranger).members["ip"] == "81.2.69.0"
    bogus = facts(ip="10.1.2.3", headers={"X-IP-Policy": "everything"})
    assert run(e, request=bogus).members["ip"] == "10.1.2.0"


def test_a_source_can_turn_steps_off_and_set_its_own_ip_policy() -> None:
    e = enricher(device={}, geo={"city_db": CITY, "asn_db": ASN}, ip={},
                 sources={"pixel": {"off": ["device", "geo"], "ip": "remove"}})  # fmt: skip
    pixel = run(e, "pixel")
    assert (pixel.device, pixel.geo, pixel.members["ip"]) == (None, None, None)
    tracker = run(e)
    assert raw(tracker.device)["browser"] == "Chrome" and tracker.members["ip"] == "81.2.69.0"


def test_a_blocked_plan_routes_to_the_dead_letter_topic_and_omit_changes_properties() -> None:
    schema = {"type": "object", "properties": {"plan": {"enum": ["pro"]}}}
    e = enricher(plans={"plans": [
        {"name": "clicked", "event_name": "Clicked", "schema": schema, "mode": "block"},
    ]})  # fmt: skip
    blocked = run(e, properties={"plan": "gold"})
    assert (blocked.topic, blocked.violations[0]["path"] if blocked.violations else "") == (
        "dead", "/plan",
    )  # fmt: skip
    e = enricher(plans={"plans": [
        {"name": "clicked", "event_name": "Clicked", "schema": schema, "mode": "omit"},
    ]})  # fmt: skip
    omitted = run(e, properties={"plan": "pro", "secret": "s"})
    assert (omitted.topic, omitted.members["properties"]) == ("", {"plan": "pro"})


def test_legacy_truncate_ip_still_masks_after_the_lookup() -> None:
    config = Enrich.model_validate_json(json.dumps({"geo": {"city_db": CITY}}))
    e = Enricher(config, legacy_truncate=True)
    added = run(e)
    assert (raw(added.geo)["city"], added.members["ip"]) == ("London", "81.2.69.0")
