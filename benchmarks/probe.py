"""One-shot HTTP GETs on loopback: readiness polling and the body check before a load."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

# An empty ProxyHandler: an http_proxy in the environment must not reroute loopback requests.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


async def fetch(url: str, *, limit: float = 2.0) -> tuple[int, bytes]:
    """Status and body of ``GET url`` within ``limit`` seconds; ``OSError`` if nothing answers."""
    return await asyncio.to_thread(_get, url, limit)


async def body_mismatch(url: str, expected: bytes) -> str | None:
    """Why ``url`` does not answer 200 with exactly ``expected``, or None when it does."""
    try:
        status, body = await fetch(url, limit=5.0)
    except OSError as exc:
        return f"body check: GET {url} failed: {exc}"
    if status != 200:
        return f"body check: GET {url} answered {status}"
    if body != expected:
        return f"body check: GET {url} answered {body[:60]!r}, expected {expected[:60]!r}"
    return None
