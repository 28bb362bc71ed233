"""``POST <builtin_prefix>cache/purge`` on admin listeners: purge by URL, by prefix or by
tag, hard or soft. A JSON body names exactly one of ``url``, ``prefix`` and ``tag``;
``soft`` marks what it names stale instead of removing it. The answer says how many
entries this worker held; the purge reaches every worker (and, with Redis, every
instance) within about a second."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.cache.service import CacheService
from gateway.request.errors import HTTPError

MAX_BODY = 8192


async def purge(request: web.BaseRequest, service: CacheService | None) -> tuple[int, Any]:
    """(status, JSON body) for a purge request."""
    if service is None:
        raise HTTPError(404, "no route has a cache")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise HTTPError(413, f"a purge request is at most {MAX_BODY} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise HTTPError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPError(400, 'the body is a JSON object: {"url"|"prefix"|"tag": ..., "soft": bool}')
    named = [kind for kind in ("url", "prefix", "tag") if kind in body]
    unknown = sorted(set(body) - {"url", "prefix", "tag", "soft"})
    if unknown:
        raise HTTPError(400, f"unknown member {unknown[0]!r}")
    if len(named) != 1:
        raise HTTPError(400, "name exactly one of url, prefix and tag")
    kind, value, soft = named[0], body[named[0]], body.get("soft", False)
    if not isinstance(value, str) or not value or not isinstance(soft, bool):
        raise HTTPError(400, f"{kind} must be a non-empty string and soft a boolean")
    try:
        count = await service.purge(kind, value, soft=soft)
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None
    except Exception as exc:  # Redis could not take it: every worker must see a purge
        raise HTTPError(503, f"the purge could not be announced: {exc!r}") from None
    return 200, {"purged": count, "kind": kind, "value": value, "soft": soft}
