"""Device: browser, OS and device from the User-Agent (ua-parser over its Rust
matchers), refined by User-Agent Client Hints where Chromium sends them.

A parse costs about 15 µs (60 at worst) and a Client Hints list 20 µs, so each result
is kept, already encoded, per distinct input: a few thousand agents cover a site's
traffic, and a hit is one dict lookup.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.bounded import Bounded

# The Client Hints read (RFC 8941 structured fields): low entropy, sent on every
# HTTPS request by Chromium; the model and platform version only after Accept-CH.
HINTS = ("Sec-CH-UA", "Sec-CH-UA-Mobile", "Sec-CH-UA-Platform", "Sec-CH-UA-Platform-Version",
         "Sec-CH-UA-Model")  # fmt: skip
# Brands in Sec-CH-UA worth naming, in the order one is preferred over another; the
# rest (GREASE like "Not_A Brand", "Chromium" under a named brand) are skipped.
_BRANDS = {"Google Chrome": "Chrome", "Microsoft Edge": "Edge", "Opera": "Opera",
           "Brave": "Brave", "Samsung Internet": "Samsung Internet",
           "YaBrowser": "Yandex Browser", "Vivaldi": "Vivaldi"}  # fmt: skip
_PLATFORMS = {"macOS": "Mac OS X", "Chrome OS": "Chrome OS", "Windows": "Windows",
              "Android": "Android", "Linux": "Linux", "iOS": "iOS"}  # fmt: skip
_DESKTOPS = frozenset({"Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora",
                       "FreeBSD", "Debian", "OpenBSD", "NetBSD", "Solaris"})  # fmt: skip
_MOBILES = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "HarmonyOS"})


@functools.cache
def _resolver() -> Any:
    """ua-parser's resolver over ua-parser-rs (about 180 ms and 30 MiB to build: once
    per process, on the first event)."""
    from ua_parser import Domain, loaders, regex

    resolve = regex.Resolver(loaders.load_lazy_builtins())
    return functools.partial(_call, resolve, Domain.ALL)


def _call(resolve: Any, domains: Any, ua: str) -> Any:
    return resolve(ua, domains)


class DeviceParser:
    """``describe(user_agent, headers)``: the envelope's ``device`` member, encoded."""

    def __init__(self, cache_size: int) -> None:
        self._cache: Bounded[Any, tuple[msgspec.Raw, str]] = Bounded(cache_size)
        self._hints: Bounded[str, Any] = Bounded(256)
        _resolver()  # built now (about 180 ms), not on the first event

    def describe(
        self, user_agent: str, headers: Mapping[str, str] | None = None
    ) -> tuple[msgspec.Raw, bool]:
        """The member, and whether ua-parser named the agent a spider."""
        raw, kind = self._found(user_agent, headers)
        return raw, kind == "bot"

    def kind(self, user_agent: str, headers: Mapping[str, str] | None = None) -> str:
        """The device type alone (experiments target by it)."""
        return self._found(user_agent, headers)[1]

    def _found(self, user_agent: str, headers: Mapping[str, str] | None) -> tuple[msgspec.Raw, str]:
        key: Any = user_agent
        if headers is not None and "Sec-CH-UA" in headers:
            key = (user_agent, *(headers.get(name) for name in HINTS))
        found = self._cache.get(key)
        if found is None:
            fields = self.fields(user_agent, headers)
            found = (msgspec.Raw(_encode(fields)), fields["type"])
            self._cache.put(key, found)
        return found

    def fields(self, user_agent: str, headers: Mapping[str, str] | None) -> dict[str, Any]:
        """The member's fields, null where nothing is known."""
        parsed = _resolver()(user_agent) if user_agent else None
        agent = parsed.user_agent if parsed is not None else None
        system = parsed.os if parsed is not None else None
        device = parsed.device if parsed is not None else None
        fields: dict[str, Any] = {
            "browser": agent.family if agent else None,
            "browser_version": agent.major if agent else None,
            "os": system.family if system else None,
            "os_version": _version(system.major, system.minor) if system else None,
            "device": device.family if device else None,
            "brand": device.brand if device else None,
            "model": device.model if device else None,
            "type": None,
        }
        mobile = None
        if headers is not None and "Sec-CH-UA" in headers:
            mobile = self._hinted(fields, headers)
        fields["type"] = _type(fields, mobile)
        return fields

    def _hinted(self, fields: dict[str, Any], headers: Mapping[str, str]) -> bool | None:
        """Client Hints over the reduced User-Agent (which freezes the OS version and
        hides the model): what they name wins."""
        brands = self._parsed(headers["Sec-CH-UA"], list=True)
        for brand, version in brands or ():
            if brand in _BRANDS:
                fields["browser"], fields["browser_version"] = _BRANDS[brand], version
                break
        platform = self._parsed(headers.get("Sec-CH-UA-Platform"))
        if isinstance(platform, str) and platform:
            fields["os"] = _PLATFORMS.get(platform, platform)
        version = self._parsed(headers.get("Sec-CH-UA-Platform-Version"))
        if isinstance(version, str) and version:
            fields["os_version"] = _platform_version(fields["os"], version)
        model = self._parsed(headers.get("Sec-CH-UA-Model"))
        if isinstance(model, str) and model:
            fields["model"] = model
            if fields["device"] in (None, "K", "Generic Smartphone"):  # the reduced UA's
                fields["device"] = model
        mobile = self._parsed(headers.get("Sec-CH-UA-Mobile"))
        return mobile if isinstance(mobile, bool) else None

    def _parsed(self, value: str | None, *, list: bool = False) -> Any:
        """A structured field's value (a list as (name, v) pairs); None when absent or
        malformed. Kept per raw value: a site sees a few dozen."""
        if value is None:
            return None
        found = self._hints.get(value)
        if found is None:
            found = _parse_hint(value, list)
            self._hints.put(value, found)
        return found if found != () else None


def _parse_hint(value: str, as_list: bool) -> Any:
    from http_sfv.item import Item
    from http_sfv.list import List

    try:
        if as_list:
            members = List()
            members.parse(value.encode())
            return [(str(m.value), str(m.params.get("v", ""))) for m in members]
        item = Item()
        item.parse(value.encode())
        return item.value if isinstance(item.value, (bool, str)) else ()
    except ValueError:
        return ()  # cached as "nothing usable"


def _version(major: str | None, minor: str | None) -> str | None:
    if major is None:
        return None
    return f"{major}.{minor}" if minor is not None else major


def _platform_version(os_name: str | None, version: str) -> str:
    """Windows reports its platform version, not its name: 13 and up is Windows 11,
    1 to 10 Windows 10 (the Client Hints explainer)."""
    if os_name == "Windows":
        try:
            major = int(version.split(".")[0])
        except ValueError:
            return version
        return "11" if major >= 13 else "10" if major >= 1 else version
    return version


def _type(fields: dict[str, Any], mobile: bool | None) -> str:
    """mobile, tablet, desktop, bot or other: ua-parser has no device type."""
    device = fields["device"] or ""
    os_name = fields["os"]
    if device == "Spider":
        return "bot"
    if "iPad" in device or "Tablet" in device or fields.get("brand") == "Kindle":
        return "tablet"
    if mobile is True or os_name in _MOBILES:
        return "mobile"
    if os_name in _DESKTOPS or mobile is False:
        return "desktop"
    return "other"


_encode = msgspec.json.Encoder().encode
