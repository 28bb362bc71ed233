"""The link management API under the built-in prefix, on admin listeners.

Bearer token (``redirects.admin_token``, compared in constant time). JSON in and out;
invalid input is 400 naming the field.

``GET links`` (``?tag=&offset=&limit=``), ``POST links`` (201; 409 if the slug exists),
``GET|PUT|PATCH|DELETE links/<slug>``, ``POST links/<slug>/disable``.
"""

from __future__ import annotations

import hmac
import secrets
import string
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from gateway.config import Redirects
from gateway.handlers import read_json_object
from gateway.links.model import Link
from gateway.links.store import LinkStore
from gateway.request.errors import HTTPError

_ALPHABET = string.ascii_letters + string.digits
MAX_LIMIT = 500


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _invalid(exc: ValidationError) -> HTTPError:
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in error["loc"]) or "body"
    message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
    return HTTPError(400, f"{field}: {message.removeprefix('Value error, ')}")


class LinksApi:
    """Create, read, list, update, disable and delete links."""

    def __init__(
        self,
        store: LinkStore,
        config: Callable[[], Redirects | None],
        static: Callable[[], Mapping[str, Link]],
    ) -> None:
        self._store = store
        self._config = config
        self._static = static

    async def handle(self, request: web.BaseRequest, rest: str) -> web.StreamResponse:
        self._authorize(request)
        parts = [p for p in rest.split("/") if p]
        method = request.method
        if not parts:
            if method == "GET":
                return self._list(request)
            if method == "POST":
                return await self._create(request)
            raise HTTPError(405, "use GET or POST", {"Allow": "GET, POST"})
        slug = parts[0]
        if len(parts) == 2 and parts[1] == "disable" and method == "POST":
            link = self._existing(slug)
            updated = link.model_copy(update={"enabled": False})
            await self._store.put(updated)
            return _json(200, updated.to_json())
        if len(parts) != 1:
            raise HTTPError(404, "no such endpoint")
        if method == "GET":
            return _json(200, self._find(slug).to_json())
        if method in ("PUT", "PATCH"):
            current = self._existing(slug)
            body = await self._body(request)
            merged = {**current.to_json(), **body} if method == "PATCH" else {**body}
            merged["slug"] = slug
            link = self._parse(merged)
            await self._store.put(link)
            return _json(200, link.to_json())
        if method == "DELETE":
            self._existing(slug)
            await self._store.delete(slug)
            return web.Response(status=204)
        raise HTTPError(405, "use GET, PUT, PATCH or DELETE", {"Allow": "GET, PUT, PATCH, DELETE"})

    def _authorize(self, request: web.BaseRequest) -> None:
        config = self._config()
        token = config.admin_token if config is not None else None
        if not token:
            raise HTTPError(403, "link management is off: set redirects.admin_token")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPError(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})

    def _list(self, request: web.BaseRequest) -> web.Response:
        tag = request.query.get("tag")
        try:
            offset = max(0, int(request.query.get("offset", "0")))
            limit = min(MAX_LIMIT, max(1, int(request.query.get("limit", "50"))))
        except ValueError:
            raise HTTPError(400, "offset and limit must be integers") from None
        links = sorted({**self._store.links, **self._static()}.values(), key=lambda link: link.slug)
        if tag is not None:
            links = [link for link in links if tag in link.tags]
        page = links[offset : offset + limit]
        body = {
            "links": [link.to_json() for link in page],
            "total": len(links),
            "offset": offset,
            "limit": limit,
        }
        return _json(200, body)

    async def _create(self, request: web.BaseRequest) -> web.Response:
        body = await self._body(request)
        if not body.get("slug"):
            body["slug"] = self._fresh_slug()
        link = self._parse(body)
        if link.slug in self._store.links or link.slug in self._static():
            raise HTTPError(409, f"slug {link.slug!r} is taken")
        await self._store.put(link)
        return _json(201, link.to_json())

    def _fresh_slug(self) -> str:
        while True:
            slug = "".join(secrets.choice(_ALPHABET) for _ in range(7))
            if slug not in self._store.links and slug not in self._static():
                return slug

    async def _body(self, request: web.BaseRequest) -> dict[str, Any]:
        return await read_json_object(request, 64 * 1024)

    @staticmethod
    def _parse(data: dict[str, Any]) -> Link:
        try:
            return Link.model_validate_json(orjson.dumps(data))
        except ValidationError as exc:
            raise _invalid(exc) from None

    def _find(self, slug: str) -> Link:
        link = self._static().get(slug) or self._store.links.get(slug)
        if link is None:
            raise HTTPError(404, "no such link")
        return link

    def _existing(self, slug: str) -> Link:
        if slug in self._static():
            raise HTTPError(409, f"link {slug!r} is defined in the config file")
        link = self._store.links.get(slug)
        if link is None:
            raise HTTPError(404, "no such link")
        return link
