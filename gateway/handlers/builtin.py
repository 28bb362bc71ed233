"""Built-in endpoints under ``server.builtin_prefix`` (default ``/_gateway/``).

``health`` and ``ready`` answer on every listener; ``metrics`` on admin listeners (and on
public ones with ``server.public_metrics``); ``reload``, the links API, ``certificates``
``cache/purge`` and ``experiments`` on admin listeners only, which must bind a loopback
address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from gateway.config import ConfigIssue
from gateway.config.experiments import Experiment
from gateway.links.api import LinksApi
from gateway.observability.health import Readiness
from gateway.observability.metrics import CONTENT_TYPE, Metrics
from gateway.request.errors import HTTPError

if TYPE_CHECKING:  # only a TLS config builds them (cryptography, acme)
    from gateway.cache.service import CacheService
    from gateway.tls.manager import Certificates

Reload = Callable[[], Awaitable[tuple[int, list[ConfigIssue]]]]


def json_response(status: int, body: object) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class Builtins:
    """Dispatches the built-in endpoints; ``reload`` returns (status, config issues)."""

    def __init__(
        self,
        metrics: Metrics,
        readiness: Readiness,
        reload: Reload,
        links: Callable[[], LinksApi | None] = lambda: None,
        certificates: Callable[[], Certificates | None] = lambda: None,
        cache: Callable[[], CacheService | None] = lambda: None,
        experiments: Callable[[], Sequence[Experiment]] = lambda: (),
    ) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._reload = reload
        self._links = links
        self._certificates = certificates
        self._cache = cache
        self._experiments = experiments

    async def handle(
        self, request: web.BaseRequest, name: str, *, admin: bool, public_metrics: bool
    ) -> web.StreamResponse:
        if name == "health":
            self._allow(request, "GET", "HEAD")
            return json_response(200, {"status": "ok"})
        if name == "ready":
            self._allow(request, "GET", "HEAD")
            ready, body = self._readiness.report()
            return json_response(200 if ready else 503, body)
        if name == "metrics" and (admin or public_metrics):
            self._allow(request, "GET", "HEAD")
            # Multiprocess mode reads one file per worker: keep that off the loop.
            self._metrics.flush()
            text = await asyncio.get_running_loop().run_in_executor(None, self._metrics.render)
            return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})
        if name == "reload" and admin:
            self._allow(request, "POST")
            status, issues = await self._reload()
            if issues:
                return json_response(
                    400, {"status": "rejected", "errors": [str(i) for i in issues]}
                )
            return json_response(status, {"status": "reloaded" if status == 200 else "reloading"})
        if admin and (name == "links" or name.startswith("links/")):
            api = self._links()
            if api is None:
                raise HTTPError(404, "link management needs a redirects section")
            return await api.handle(request, name.removeprefix("links"))
        if admin and name in ("certificates", "certificates/renew"):
            return await self._certificates_endpoint(request, name)
        if admin and (name == "experiments" or name.startswith("experiments/")):
            from gateway.experiments.api import report

            self._allow(request, "GET", "HEAD")
            wanted = name.removeprefix("experiments").lstrip("/")
            return json_response(*await report(wanted, self._experiments(), self._metrics))
        if admin and name == "cache/purge":
            from gateway.cache.api import purge  # a worker without a cache never loads it

            self._allow(request, "POST")
            return json_response(*await purge(request, self._cache()))
        raise HTTPError(404, "no such built-in endpoint")

    async def _certificates_endpoint(self, request: web.BaseRequest, name: str) -> web.Response:
        certificates = self._certificates()
        if certificates is None:
            raise HTTPError(404, "no tls listener serves certificates in this worker")
        if name == "certificates":
            self._allow(request, "GET", "HEAD")
            return json_response(200, {"certificates": certificates.report()})
        self._allow(request, "POST")
        only = request.query.get("name")
        outcomes = await certificates.renew_now(only)
        if outcomes is None:
            raise HTTPError(404, "no tls.acme section: nothing to renew")
        if not outcomes:
            raise HTTPError(404, f"{only!r} is not one of tls.acme.domains")
        results = [{"domain": o.domain, "status": o.status, "detail": o.detail} for o in outcomes]
        if any(o.status == "busy" for o in outcomes):
            return json_response(409, {"results": results})  # an order is in progress
        issued = all(o.status == "issued" for o in outcomes)
        return json_response(200 if issued else 502, {"results": results})

    @staticmethod
    def _allow(request: web.BaseRequest, *methods: str) -> None:
        if request.method not in methods:
            raise HTTPError(405, f"use {' or '.join(methods)}", {"Allow": ", ".join(methods)})
