"""CORS for browser tracking clients (Fetch standard, "CORS protocol").

Cookies matter here (visitor and session ids), so responses allow credentials and so
never say ``*``: a matching ``Origin`` is reflected, with ``Vary: Origin`` so caches keep
answers for different origins apart. ``"*"`` in the config means any origin is reflected.
"""

from __future__ import annotations

from aiohttp import web

from gateway.config import Cors as CorsConfig
from gateway.request.errors import HTTPError

ALLOWED_METHODS = ("GET", "POST", "OPTIONS")
# SP-Anonymous: Snowplow's trackers ask for anonymous tracking with it (no cookie, no IP).
ALLOWED_HEADERS = frozenset({"content-type", "authorization", "content-encoding", "sp-anonymous"})


class Cors:
    """Answers preflights and adds CORS headers for allowed origins."""

    def __init__(self, config: CorsConfig) -> None:
        self._any = "*" in config.allowed_origins
        self._origins = frozenset(config.allowed_origins)
        self._max_age = str(config.max_age)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self._any or origin in self._origins)

    def preflight(self, request: web.BaseRequest) -> web.StreamResponse:
        """The answer to an OPTIONS preflight: 204 with the grants, or 403 with why."""
        origin = request.headers.get("Origin")
        if not self.allows(origin):
            raise HTTPError(403, "origin not allowed")
        method = request.headers.get("Access-Control-Request-Method", "")
        if method not in ALLOWED_METHODS:
            raise HTTPError(403, f"method {method!r} not allowed")
        asked = request.headers.get("Access-Control-Request-Headers", "")
        names = {h.strip().lower() for h in asked.split(",") if h.strip()}
        if not names <= ALLOWED_HEADERS:
            raise HTTPError(
                403, f"headers not allowed: {', '.join(sorted(names - ALLOWED_HEADERS))}"
            )
        response = web.Response(status=204)
        self.decorate(request, response)
        response.headers["Access-Control-Allow-Methods"] = ", ".join(ALLOWED_METHODS)
        response.headers["Access-Control-Allow-Headers"] = (
            "Content-Type, Authorization, Content-Encoding, SP-Anonymous"
        )
        response.headers["Access-Control-Max-Age"] = self._max_age
        return response

    def decorate(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        response.headers.add("Vary", "Origin")
        if self.allows(origin):
            assert origin is not None
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
