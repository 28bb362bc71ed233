"""One-shot HTTP requests on loopback: readiness polling and the answer check before a load."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Mapping

# An empty ProxyHandler: an http_proxy in the environment must not reroute loopback requests.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _send(
    url: str, method: str, body: bytes | None, headers: Mapping[str, str], timeout: float
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


async def fetch(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    limit: float = 2.0,
) -> tuple[int, bytes]:
    """Status and body of one request within ``limit`` seconds; ``OSError`` if nothing answers."""
    return await asyncio.to_thread(_send, url, method, body, headers or {}, limit)


async def answer_mismatch(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    status: int = 200,
    expected: bytes,
) -> str | None:
    """Why ``url`` does not answer ``status`` with exactly ``expected``, or None when it does."""
    try:
        got_status, got_body = await fetch(
            url, method=method, body=body, headers=headers, limit=5.0
        )
    except OSError as exc:
        return f"answer check: {method} {url} failed: {exc}"
    if got_status != status:
        return f"answer check: {method} {url} answered {got_status}, expected {status}"
    if got_body != expected:
        return (
            f"answer check: {method} {url} answered {got_body[:60]!r}, expected {expected[:60]!r}"
        )
    return None
