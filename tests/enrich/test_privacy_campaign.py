"""Campaign, referrer, IP masking, PII hashing and field paths, each without a socket."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from gateway.config.enrich import Campaign
from gateway.enrich.campaign import Referrers, campaign, page_query
from gateway.enrich.privacy import Hasher, Paths, denied_categories, masker, remove

CLICK_IDS = Campaign().click_ids


def test_campaign_from_utm_parameters_and_a_click_id() -> None:
    query = "utm_source=newsletter&utm_medium=email&utm_campaign=spring%20sale&gclid=Cj0KCQ"
    assert campaign(query, CLICK_IDS) == {
        "source": "newsletter", "medium": "email", "name": "spring sale",
        "click_id": "Cj0KCQ", "network": "Google",
    }  # fmt: skip
    assert campaign("utm_term=shoes&utm_content=banner&fbclid=IwAR", CLICK_IDS) == {
        "term": "shoes", "content": "banner", "click_id": "IwAR", "network": "Facebook",
    }  # fmt: skip


def test_campaign_takes_the_first_value_and_ignores_what_it_does_not_know() -> None:
    assert campaign("utm_source=a&utm_source=b&x=1&msclkid=m&gclid=g", CLICK_IDS) == {
        "source": "a", "click_id": "m", "network": "Microsoft",
    }  # fmt: skip
    assert campaign("page=2&q=shoes", CLICK_IDS) == {}
    assert campaign("", CLICK_IDS) == {}
    assert campaign("mycid=7", {"mycid": "Partner"}) == {"click_id": "7", "network": "Partner"}


def test_page_query_is_the_part_between_question_mark_and_fragment() -> None:
    assert page_query("https://shop.example/p?utm_source=x&a=1#top") == "utm_source=x&a=1"
    assert page_query("https://shop.example/p") == ""


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        ("", {"host": None, "medium": "direct", "source": None}),
        ("https://www.google.com/", {"host": "google.com", "medium": "search", "source": "Google"}),
        ("https://www.google.co.uk/search?q=x",
         {"host": "google.co.uk", "medium": "search", "source": "Google"}),
        ("https://mail.google.com/mail/u/0/",
         {"host": "mail.google.com", "medium": "email", "source": "Gmail"}),
        ("https://l.facebook.com/l.php?u=x",
         {"host": "l.facebook.com", "medium": "social", "source": "Facebook"}),
        ("https://t.co/abc", {"host": "t.co", "medium": "social", "source": "X"}),
        ("https://chatgpt.com/", {"host": "chatgpt.com", "medium": "chatbot", "source": "ChatGPT"}),
        ("https://shop.example/cart", {"host": "shop.example", "medium": "internal",
                                       "source": None}),
        ("https://blog.example.org/post", {"host": "blog.example.org", "medium": "unknown",
                                           "source": None}),
        ("https://partner.example.net/x", {"host": "partner.example.net", "medium": "paid",
                                           "source": None}),
        ("https://docs.example/x", {"host": "docs.example", "medium": "internal", "source": None}),
        ("not a url", {"host": None, "medium": "unknown", "source": None}),
        ("http://[::1", {"host": None, "medium": "unknown", "source": None}),
    ],
)  # fmt: skip
def test_referrer_host_and_medium(referrer: str, expected: dict[str, Any]) -> None:
    referrers = Referrers({"partner.example.net": "paid"}, ("docs.example",))
    assert referrers.member(referrer, "www.shop.example:443") == expected


@pytest.mark.parametrize(
    ("policy", "ip", "expected"),
    [
        ("truncate", "81.2.69.142", "81.2.69.0"),
        ("truncate", "2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        ("truncate", "::ffff:81.2.69.142", "81.2.69.0"),  # the IPv4 it is, not ::/48
        ("truncate", "not an ip", None),  # nothing of it is kept
        ("keep", "81.2.69.142", "81.2.69.142"),
        ("remove", "81.2.69.142", None),
    ],
)
def test_ip_masking(policy: str, ip: str, expected: str | None) -> None:
    assert masker(policy, 24, 48)(ip) == expected


def test_ip_masking_takes_other_prefixes() -> None:
    mask = masker("truncate", 16, 32)
    assert (mask("81.2.69.142"), mask("2001:db8:85a3::1")) == ("81.2.0.0", "2001:db8::")
    assert masker("truncate", 0, 0)("81.2.69.142") == "0.0.0.0"


def test_the_hash_is_hmac_sha256_of_the_salt_in_hex() -> None:
    salt = "a-salt-of-sixteen-or-more"
    hasher = Hasher(salt)
    for value in ("jane@example.com", "u-123", "", "é"):
        assert hasher(value) == hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()
    assert hasher(42) == hmac.new(salt.encode(), b"42", hashlib.sha256).hexdigest()
    long_salt = "s" * 100  # past the block size: hashed first, as RFC 2104 says
    assert Hasher(long_salt)("x") == hmac.new(long_salt.encode(), b"x", hashlib.sha256).hexdigest()
    for kept in (None, True, {"a": 1}, [1]):
        assert hasher(kept) == kept


def test_paths_change_copies_never_the_callers_objects() -> None:
    traits = {"email": "a@example.com", "name": "A"}
    context = {"traits": traits, "ip": "1.2.3.4"}
    members: dict[str, Any] = {"user_id": "u1", "context": context, "properties": None}
    Paths(["user_id", "context.traits.email", "properties.email", "context.nothing.x"]).apply(
        members, str.upper
    )
    assert members == {
        "user_id": "U1",
        "context": {"traits": {"email": "A@EXAMPLE.COM", "name": "A"}, "ip": "1.2.3.4"},
        "properties": None,
    }
    assert traits == {"email": "a@example.com", "name": "A"}  # as the client sent it
    assert context["traits"] is traits


def test_removing_a_path_drops_the_key_and_nulls_a_member() -> None:
    members: dict[str, Any] = {"ip": "1.2.3.4", "properties": {"email": "x", "plan": "pro"}}
    Paths(["ip", "properties.email"]).apply(members, remove)
    assert members == {"ip": None, "properties": {"plan": "pro"}}


def test_denied_categories_are_those_set_to_false() -> None:
    preferences = {"Analytics": True, "Advertising": False, "Functional": "no", "Social": False}
    context = {"consent": {"categoryPreferences": preferences}}
    assert denied_categories(context) == ["Advertising", "Social"]
    for nothing in (None, {}, {"consent": 1}, {"consent": {"categoryPreferences": []}}):
        assert denied_categories(nothing) == []
