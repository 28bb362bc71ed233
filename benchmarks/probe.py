"""One-shot HTTP requests on loopback: readiness polling and the answer check before a load."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the answer under test, never a hop: its target may not even exist here."""

    def redirect_request(self, *_: object) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


def _unverified() -> ssl.SSLContext:
    # The HTTPS scenarios' certificate is self-signed for the run; what is checked is the
    # answer, not who signed it.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# An empty ProxyHandler: an http_proxy in the environment must not reroute loopback requests.
_OPENER = urllib.request.build_opener(
    urllib.request.ProxyHandler({}),
    urllib.request.HTTPSHandler(context=_unverified()),
    _NoRedirects(),
)


@dataclass(frozen=True, slots=True)
class Answer:
    """A response as received; header names in lower case (the last of repeated ones)."""

    status: int
    body: bytes
    headers: Mapping[str, str]


def _headers(message: Message) -> dict[str, str]:
    return {name.lower(): value for name, value in message.items()}


def _send(
    url: str, method: str, body: bytes | None, headers: Mapping[str, str], timeout: float
) -> Answer:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Answer(int(response.status), bytes(response.read()), _headers(response.headers))
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, error.read(), _headers(error.headers))


async def fetch(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    limit: float = 2.0,
) -> Answer:
    """One request's answer within ``limit`` seconds, redirects not followed; ``OSError``
    if nothing answers."""
    return await asyncio.to_thread(_send, url, method, body, headers or {}, limit)


def mismatch(
    answer: Answer,
    *,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
) -> str | None:
    """How ``answer`` differs from ``status``, exactly ``body`` and each of ``headers``
    (exact values, names in any case), or None when it does not."""
    if answer.status != status:
        return f"answered {answer.status}, expected {status}"
    for name, value in (headers or {}).items():
        got = answer.headers.get(name.lower())
        if got != value:
            return f"answered {name}: {got!r}, expected {value!r}"
    got_body = answer.body
    if answer.headers.get("content-encoding") == "gzip":
        got_body = gzip.decompress(got_body)  # compressors differ: compare what they carry
    if got_body != body:
        return f"answered {got_body[:60]!r}, expected {body[:60]!r}"
    return None


async def answer_mismatch(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    status: int = 200,
    expected: bytes,
    expected_headers: Mapping[str, str] | None = None,
) -> str | None:
    """Why ``url`` does not answer ``status`` with exactly ``expected`` and
    ``expected_headers``, or None when it does."""
    try:
        answer = await fetch(url, method=method, body=body, headers=headers, limit=5.0)
    except OSError as exc:
        return f"answer check: {method} {url} failed: {exc}"
    reason = mismatch(answer, status=status, body=expected, headers=expected_headers)
    return None if reason is None else f"answer check: {method} {url} {reason}"
