"""RFC 9111 as a shared cache reads it: plain functions of parsed heads, no IO.

Everything costly is decided once, when an answer is stored (its freshness lifetime,
its initial age, what forbids serving it stale); a hit then only compares numbers.
Parsers are strict where the RFC is (delta-seconds, the three HTTP-date forms) and
memoized: origins repeat a handful of header values.
"""

from __future__ import annotations

import functools
import re
from calendar import timegm
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DELTA_MAX = 2147483648  # §1.2.2: the greatest delta-seconds a cache must represent

# Final statuses whose meaning this cache knows (RFC 9110 §15); must-understand (§5.2.2.3)
# lets only these be stored despite no-store.
UNDERSTOOD = frozenset(
    {200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 307, 308, 400, 401, 402,
     403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422,
     426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505}
)  # fmt: skip
# RFC 9110 §15.1: heuristically cacheable by default.
HEURISTIC = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_DIRECTIVE = re.compile(r'\s*([^\s=,]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,]*))?\s*(?:,|$)')


@functools.lru_cache(maxsize=512)
def cache_control(value: str) -> Mapping[str, str | None]:
    """The directives of a Cache-Control field value (all lines joined with ", "):
    lowercase names, unquoted values, the first occurrence of a name winning."""
    directives: dict[str, str | None] = {}
    position = 0
    while position < len(value):
        match = _DIRECTIVE.match(value, position)
        if match is None or match.end() == position:
            break
        position = match.end()
        name, raw = match.group(1).lower(), match.group(2)
        if raw is not None:
            raw = raw.strip()
            if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        directives.setdefault(name, raw)
    return directives


def delta_seconds(value: str | None) -> int | None:
    """A delta-seconds value (§1.2.2), capped at 2^31; None when absent or invalid."""
    if value is None or not value.isdigit() or not value.isascii():
        return None
    return min(int(value), DELTA_MAX)


def fields(values: Iterable[str]) -> str:
    """The lines of a field as one value (RFC 9110 §5.3)."""
    return ", ".join(values)


_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(\d\d):(\d\d):(\d\d)"
_IMF = re.compile(rf"{_DAY}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT")
_RFC850 = re.compile(rf"{_LONG_DAY}, (\d\d)-{_MONTH}-(\d\d) {_TIME} GMT")
_ASCTIME = re.compile(rf"{_DAY} {_MONTH} ([ \d]\d) {_TIME} (\d{{4}})")


@functools.lru_cache(maxsize=512)
def http_date(value: str | None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, RFC 850 or asctime) as Unix time;
    None for anything else, which a cache must treat as a time in the past."""
    if value is None:
        return None
    value = value.strip()
    if match := _IMF.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850.fullmatch(value):
        day, month, short, hour, minute, second = match.groups()
        year = str(1900 + int(short) if int(short) >= 70 else 2000 + int(short))
    elif match := _ASCTIME.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    try:
        parts = (int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
        return float(timegm((*parts, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def age_value(lines: list[str]) -> int:
    """The Age an upstream sent: the first member of its first line, if all digits
    (§5.1); anything else counts as none."""
    if not lines:
        return 0
    first = lines[0].split(",", 1)[0].strip()
    seconds = delta_seconds(first)
    return seconds if seconds is not None else 0


@dataclass(frozen=True, slots=True)
class Freshness:
    """What the stored answer's own head says about reusing it."""

    lifetime: float  # seconds fresh from its origin (0: stale at once)
    heuristic: bool  # the lifetime was guessed (§4.2.2), not given
    no_cache: bool  # store, but validate before every use (§5.2.2.4)
    revalidate: bool  # never served stale: must-, proxy-revalidate, s-maxage (§5.2.2.2)
    swr: float  # stale-while-revalidate seconds (RFC 5861)
    sie: float  # stale-if-error seconds (RFC 5861)


@dataclass(frozen=True, slots=True)
class Policy:
    """A route's choices where the RFC leaves them to the cache."""

    heuristic: bool = False  # §4.2.2 guesses; off by default
    heuristic_fraction: float = 0.1
    heuristic_max: float = 86400.0
    default_ttl: float = 0.0  # for heuristically cacheable answers with nothing else
    store_set_cookie: bool = False


def freshness(
    status: int,
    directives: Mapping[str, str | None],
    date: float,
    expires: str | None,
    last_modified: str | None,
    policy: Policy,
) -> Freshness:
    """§4.2.1: s-maxage, else max-age, else Expires - Date; else a heuristic, only where
    enabled and for the statuses §4.2.2 allows (or ``public``)."""
    heuristic = False
    lifetime: float | None = None
    for name in ("s-maxage", "max-age"):
        if name in directives:
            lifetime = float(delta_seconds(directives[name]) or 0)  # invalid: stale
            break
    if lifetime is None and expires is not None:
        when = http_date(expires)
        lifetime = max(0.0, when - date) if when is not None else 0.0
    if lifetime is None:
        lifetime = 0.0
        allowed = status in HEURISTIC or "public" in directives
        if allowed and policy.heuristic and (modified := http_date(last_modified)) is not None:
            lifetime = min(max(0.0, date - modified) * policy.heuristic_fraction,
                           policy.heuristic_max)  # fmt: skip
            heuristic = lifetime > 0
        elif allowed and policy.default_ttl > 0:
            lifetime, heuristic = policy.default_ttl, True
    return Freshness(
        lifetime=lifetime,
        heuristic=heuristic,
        no_cache="no-cache" in directives and directives["no-cache"] is None,
        revalidate=any(d in directives for d in ("must-revalidate", "proxy-revalidate", "s-maxage"))
        or ("no-cache" in directives and directives["no-cache"] is None),
        swr=float(delta_seconds(directives.get("stale-while-revalidate")) or 0),
        sie=float(delta_seconds(directives.get("stale-if-error")) or 0),
    )


def refusal(
    method: str,
    status: int,
    directives: Mapping[str, str | None],
    request_directives: Mapping[str, str | None],
    *,
    authorization: bool,
    set_cookie: bool,
    vary: tuple[str, ...] | None,
    expires: bool,
    validator: bool,
    policy: Policy,
) -> str | None:
    """Why an answer may not be stored (§3), as a Cache-Status ``detail`` token, or None.
    Each rule stands alone: no option relaxes ``private`` or §3.5's Authorization rule."""
    if method != "GET":
        return "method"
    if status < 200 or status in (206, 304):
        return "status"
    must_understand = "must-understand" in directives
    if must_understand and status not in UNDERSTOOD:
        return "must-understand"
    if "no-store" in directives and not must_understand:
        return "no-store"
    if "no-store" in request_directives:
        return "request-no-store"
    if "private" in directives and directives["private"] is None:
        return "private"
    if authorization and not any(
        d in directives for d in ("public", "s-maxage", "must-revalidate")
    ):
        return "authorization"  # §3.5: an authenticated answer is the user's own
    if set_cookie and not policy.store_set_cookie:
        return "set-cookie"
    if vary is None:
        return "vary-star"
    explicit = expires or any(d in directives for d in ("public", "max-age", "s-maxage"))
    if explicit or validator:
        return None
    if policy.heuristic or policy.default_ttl > 0:
        return None if status in HEURISTIC else "no-freshness"
    return "no-freshness"


def stripped_fields(directives: Mapping[str, str | None]) -> frozenset[str]:
    """Fields ``private="..."`` and ``no-cache="..."`` name: never stored (§5.2.2.4, 7)."""
    names: set[str] = set()
    for directive in ("private", "no-cache"):
        value = directives.get(directive)
        if value:
            names.update(name.strip().lower() for name in value.split(",") if name.strip())
    return frozenset(names)


def initial_age(age: int, date: float, request_time: float, response_time: float) -> float:
    """§4.2.3's corrected_initial_age: what the answer's age was when it arrived."""
    apparent = max(0.0, response_time - date)
    corrected = age + (response_time - request_time)
    return max(apparent, corrected)


def vary_names(lines: list[str]) -> tuple[str, ...] | None:
    """The request fields an answer varies on, lowercase and in order; None for ``*``."""
    names: list[str] = []
    for line in lines:
        for name in line.split(","):
            name = name.strip().lower()
            if name == "*":
                return None
            if name and name not in names:
                names.append(name)
    return tuple(names)


def invalidated(method: str, status: int) -> bool:
    """§4.4: a non-error answer to an unsafe method invalidates what it names."""
    return method not in SAFE_METHODS and 200 <= status < 400


def invalidated_uris(host: str, raw_path: str, headers: Mapping[str, str]) -> list[str]:
    """§4.4: the target URI, and the Location and Content-Location of the same origin
    (never another's: a response cannot purge a site it does not serve)."""
    uris = [f"{host}{raw_path}"]
    for name in ("Location", "Content-Location"):
        value = headers.get(name)
        if value is None:
            continue
        if value.startswith("/") and not value.startswith("//"):
            uris.append(f"{host}{value}")
        elif "://" in value and value.split("://", 1)[1].split("/", 1)[0].lower() == host.lower():
            uris.append(value)
    return uris
