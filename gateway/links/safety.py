"""Which redirect targets are safe to send a browser to.

An open redirect lets anyone borrow the gateway's domain to send people anywhere. A target
passes only if it is a plain absolute http(s) URL with a host name (no userinfo, no
control characters or backslashes, no IP literal unless allowed) and, for ad-hoc links,
it is either signed with a current key or its host is on the allow-list.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
MAX_URL = 4096


class UnsafeTarget(ValueError):
    """The target is refused; ``str()`` says why."""


def check_target(url: str, *, allow_ip: bool = False) -> str:
    """The target's lowercase host, or :class:`UnsafeTarget` with the reason."""
    if len(url) > MAX_URL:
        raise UnsafeTarget("target URL is too long")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise UnsafeTarget("target URL contains whitespace, control characters or backslashes")
    if not url.lower().startswith(("http://", "https://")):
        raise UnsafeTarget("target URL must start with http:// or https://")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeTarget("target URL is malformed") from None
    del port
    if "@" in parts.netloc:
        raise UnsafeTarget("target URL must not contain user information")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeTarget("target URL has no host")
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        # Browsers read "127.1", "0x7f.1" or "2130706433" as addresses too: a name whose
        # last label is numeric or hex is an address in disguise.
        last = host.rsplit(".", 1)[-1]
        is_ip = last.isdigit() or last.startswith("0x")
        if not is_ip and not _HOST.match(host):
            raise UnsafeTarget("target host is not a valid DNS name") from None
    if is_ip and not allow_ip:
        raise UnsafeTarget("target host is an IP address")
    return host


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Exact names, or ``*.domain`` for any name below it (not the domain itself)."""
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def sign(key: str, url: str) -> str:
    """HMAC-SHA256 of the URL, hex: what ``sig`` must carry for an ad-hoc link."""
    return hmac.new(key.encode(), url.encode(), hashlib.sha256).hexdigest()


def signature_valid(keys: Sequence[str], url: str, signature: str) -> bool:
    """True if any active key signed ``url`` (several keys allow rotation); constant time."""
    results = [hmac.compare_digest(sign(key, url), signature) for key in keys]
    return any(results)


def target_refusal(
    url: str,
    signature: str,
    *,
    signing_keys: Sequence[str],
    allowed_hosts: Sequence[str],
    allow_ip: bool,
) -> str | None:
    """Why an ad-hoc redirect to ``url`` must not be followed (None: it may): the target
    must be a safe URL, and signed or on the allow-list, so it is no open redirect."""
    try:
        host = check_target(url, allow_ip=allow_ip)
    except UnsafeTarget as exc:
        return str(exc)
    signed = bool(signature) and signature_valid(signing_keys, url, signature)
    if not signed and not host_allowed(host, allowed_hosts):
        return "target is neither signed nor on the allow-list"
    return None
