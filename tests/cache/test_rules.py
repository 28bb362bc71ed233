"""RFC 9111's decisions as plain functions, table by table (many cases come from the
http-tests/cache-tests suite's groups: cc-parse, age-parse, expires-parse, vary-parse),
and the memory tier's bounds."""

from __future__ import annotations

from calendar import timegm

import pytest

from gateway.cache import rules
from gateway.cache.entry import Entry, dumps, loads
from gateway.cache.store import MemoryStore


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-age=60", {"max-age": "60"}),
        ("Max-Age=60, PUBLIC", {"max-age": "60", "public": None}),
        ("max-age=10, max-age=20", {"max-age": "10"}),  # the first wins
        (
            'private="Set-Cookie, X-User", max-age=5',
            {"private": "Set-Cookie, X-User", "max-age": "5"},
        ),
        ('foo="max-age=99", max-age=7', {"foo": "max-age=99", "max-age": "7"}),
        ("no-cache,no-store", {"no-cache": None, "no-store": None}),
    ],
)
def test_cache_control_directives_parse(value: str, expected: dict[str, str | None]) -> None:
    assert dict(rules.cache_control(value)) == expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("60", 60), ("003600", 3600), ("2147483648", 2147483648), ("99999999999", 2147483648),
     ("-1", None), ("1.5", None), ("'60'", None), ("", None), ("٣", None)],
)  # fmt: skip
def test_delta_seconds_are_digits_capped_at_2_to_the_31(value: str, seconds: int | None) -> None:
    assert rules.delta_seconds(value) == seconds


EPOCH_2026 = float(timegm((2026, 12, 7, 8, 49, 37, 0, 0, 0)))


@pytest.mark.parametrize(
    ("value", "when"),
    [
        ("Mon, 07 Dec 2026 08:49:37 GMT", EPOCH_2026),  # IMF-fixdate
        ("Monday, 07-Dec-26 08:49:37 GMT", EPOCH_2026),  # RFC 850
        ("Mon Dec  7 08:49:37 2026", EPOCH_2026),  # asctime
        ("Mon, 07 Dec 2026 08:49:37 UTC", None),
        ("Mon, 07 Dec 26 08:49:37 GMT", None),
        ("Mon 07 Dec 2026 08:49:37 GMT", None),
        ("0", None),
        ("", None),
    ],
)
def test_http_dates_take_the_three_forms_only(value: str, when: float | None) -> None:
    assert rules.http_date(value) == when


@pytest.mark.parametrize(
    ("lines", "age"),
    [(["7200"], 7200), (["7200, 0"], 7200), (["0, 7200"], 0), (["7200", "0"], 7200),
     (["abc"], 0), (["-7200"], 0), (["7200.0"], 0), ([], 0)],
)  # fmt: skip
def test_age_is_the_first_member_of_the_first_line_if_digits(lines: list[str], age: int) -> None:
    assert rules.age_value(lines) == age


POLICY = rules.Policy()


def freshness(
    status: int = 200,
    cc: str = "",
    expires: str | None = None,
    last_modified: str | None = None,
    policy: rules.Policy = POLICY,
) -> rules.Freshness:
    return rules.freshness(
        status, rules.cache_control(cc), EPOCH_2026, expires, last_modified, policy
    )


def test_freshness_takes_s_maxage_then_max_age_then_expires() -> None:
    assert freshness(cc="s-maxage=5, max-age=9").lifetime == 5
    assert freshness(cc="max-age=9", expires="Mon, 07 Dec 2026 08:50:37 GMT").lifetime == 9
    assert freshness(expires="Mon, 07 Dec 2026 08:50:37 GMT").lifetime == 60
    assert freshness(expires="0").lifetime == 0  # an invalid Expires: already expired
    assert freshness(cc="max-age=abc").lifetime == 0


def test_heuristic_freshness_only_where_enabled_and_allowed() -> None:
    modified = "Fri, 27 Nov 2026 08:49:37 GMT"  # ten days before Date
    on = rules.Policy(heuristic=True)
    assert freshness(last_modified=modified).lifetime == 0  # off by default
    assert freshness(last_modified=modified, policy=on) == rules.Freshness(
        86400.0, True, False, False, 0.0, 0.0
    )  # a tenth of ten days, capped at heuristic_max
    assert freshness(status=201, last_modified=modified, policy=on).lifetime == 0
    assert freshness(status=201, cc="public", last_modified=modified, policy=on).lifetime == 86400


def test_what_forbids_serving_stale() -> None:
    assert freshness(cc="max-age=5").revalidate is False
    for cc in (
        "max-age=5, must-revalidate",
        "max-age=5, proxy-revalidate",
        "s-maxage=5",
        "no-cache",
    ):
        assert freshness(cc=cc).revalidate is True, cc


def refusal(status: int = 200, cc: str = "max-age=60", method: str = "GET",
            request: str = "", **facts: object) -> str | None:  # fmt: skip
    given: dict[str, object] = {"authorization": False, "set_cookie": False, "vary": (),
                                "expires": False, "validator": False, "policy": POLICY}  # fmt: skip
    given.update(facts)
    return rules.refusal(method, status, rules.cache_control(cc), rules.cache_control(request),
                         **given)  # type: ignore[arg-type]  # fmt: skip


def test_storability_rules_each_stand_alone() -> None:
    assert refusal() is None
    assert refusal(method="POST") == "method"
    assert refusal(status=206) == "status" and refusal(status=304) == "status"
    assert refusal(cc="no-store, max-age=60") == "no-store"
    assert refusal(cc="no-store, must-understand, max-age=60") is None  # a status it knows
    assert refusal(status=599, cc="no-store, must-understand") == "must-understand"
    assert refusal(request="no-store") == "request-no-store"
    assert refusal(cc="private, max-age=60") == "private"
    assert refusal(cc='private="X-User", max-age=60') is None  # the field is stripped instead
    assert refusal(authorization=True) == "authorization"
    for allowed in ("public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"):
        assert refusal(cc=allowed, authorization=True) is None, allowed
    assert refusal(cc="private, public, max-age=60", authorization=True) == "private"
    assert refusal(set_cookie=True) == "set-cookie"
    assert refusal(set_cookie=True, policy=rules.Policy(store_set_cookie=True)) is None
    assert refusal(vary=None) == "vary-star"
    assert refusal(cc="") == "no-freshness"
    assert refusal(cc="", validator=True) is None and refusal(cc="", expires=True) is None
    assert refusal(cc="no-cache", validator=True) is None  # stored, validated at each use


def test_vary_names_and_star() -> None:
    assert rules.vary_names(["Accept-Encoding, accept-language", "Cookie"]) == (
        "accept-encoding", "accept-language", "cookie",
    )  # fmt: skip
    assert rules.vary_names(["Foo, *"]) is None and rules.vary_names([", *"]) is None


def test_unsafe_methods_invalidate_on_success_only() -> None:
    assert rules.invalidated("POST", 201) and rules.invalidated("M-SEARCH", 302)
    assert not rules.invalidated("POST", 500) and not rules.invalidated("GET", 200)


def entry(key: str, size: int, **fields: object) -> Entry:
    base: dict[str, object] = dict(
        key=key, route="r", url=f"a.example{key}", query="", vary=(), variant=(),
        status=200, fields=(), body=b"x" * size, request_time=0.0, response_time=0.0,
        initial_age=0.0, lifetime=60.0, heuristic=False, no_cache=False, revalidate=False,
        swr=0.0, sie=0.0, auth_ok=False, etag=None, last_modified=None, tags=(), stored_at=0.0,
    )  # fmt: skip
    base.update(fields)
    return Entry(**base)  # type: ignore[arg-type]


def test_the_memory_tier_evicts_the_least_recently_used_to_stay_within_its_bytes() -> None:
    evicted: list[int] = []
    store = MemoryStore(3 * (1000 + 400), evicted.append)
    for key in ("/a", "/b", "/c"):
        store.put(entry(key, 1000))
    assert store.get("/a", ()) is not None  # /b is now the least recently used
    store.put(entry("/d", 1000))
    assert [store.get(k, ()) is not None for k in ("/a", "/b", "/c", "/d")] == [
        True,
        False,
        True,
        True,
    ]
    assert evicted == [1] and store.bytes == 3 * 1400 and len(store) == 3
    store.put(entry("/huge", 10_000))
    assert store.get("/huge", ()) is None and len(store) == 3  # larger than the tier: not held


def test_an_entry_travels_to_redis_and_back_whole() -> None:
    original = entry("/a", 10, fields=(("ETag", '"1"'),), tags=("t",), variant=("en", None))
    assert loads(dumps(original)) == original
    assert loads(b"something else") is None
