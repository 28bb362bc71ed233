"""``basic_auth``: HTTP Basic (RFC 7617) against bcrypt hashes.

bcrypt costs tens of milliseconds by design, so it runs in a thread and a verified
(user, password) pair is remembered for ``cache_seconds`` by its SHA-256, never in clear.
An unknown user is checked against a hash of the same cost, so the answer takes as long
as for a wrong password: timing tells nothing about which user names exist. A client
past ``failures_per_minute`` wrong answers gets 429 without a bcrypt check at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import bcrypt
from multidict import MultiMapping

from gateway.config.middleware import BasicAuth
from gateway.request.auth import basic_credentials
from gateway.request.errors import HTTPError

MAX_CACHED = 10_000  # verified pairs; past it the cache starts over
MAX_CLIENTS = 100_000  # clients with recent failures; past it the oldest window goes
MAX_AUTHORIZATION = 4102  # "Basic " and 4096 characters of base64: longer is not decoded


class BasicAuthenticator:
    """One route's users; ``check`` returns the user name or raises 401/429."""

    def __init__(self, config: BasicAuth) -> None:
        self.config = config
        self._users = {user.username: user.password_hash.encode() for user in config.users}
        # The cost of the first user's hash, so an unknown name costs the same.
        self._dummy = bcrypt.hashpw(b"no such user", self._users[config.users[0].username][:29])
        self._verified: dict[bytes, float] = {}  # sha256 of the pair -> valid until
        self._failures: dict[str, tuple[float, int]] = {}  # client -> (window start, count)
        self._challenge = {"WWW-Authenticate": f'Basic realm="{config.realm}", charset="UTF-8"'}

    async def check(self, headers: MultiMapping[str], client_ip: str) -> str:
        now = time.monotonic()
        started, failures = self._failures.get(client_ip, (now, 0))
        if now - started >= 60:
            self._failures.pop(client_ip, None)
            started, failures = now, 0
        if failures >= self.config.failures_per_minute:
            retry = max(1, int(60 - (now - started)) + 1)
            raise HTTPError(429, "too many failed logins", {"Retry-After": str(retry)})
        header = headers.get("Authorization")
        too_long = header is not None and len(header) > MAX_AUTHORIZATION
        credentials = None if too_long else basic_credentials(header)
        if credentials is None:
            raise HTTPError(401, "authentication required", self._challenge)
        user, password = credentials
        pair = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if self._verified.get(pair, 0.0) > now:
            return user
        known = self._users.get(user)
        expected = known if known is not None else self._dummy
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, bcrypt.checkpw, password.encode(), expected)
        if ok and known is not None:
            if self.config.cache_seconds > 0:
                if len(self._verified) >= MAX_CACHED:
                    self._verified.clear()
                self._verified[pair] = now + self.config.cache_seconds
            return user
        if len(self._failures) >= MAX_CLIENTS:
            self._failures.pop(next(iter(self._failures)))
        self._failures[client_ip] = (started, failures + 1)
        raise HTTPError(401, "wrong user name or password", self._challenge)
