"""HTTP helpers every test folder shares: one request on a fresh session, polling for
something another process or worker makes true a moment later, and waiting for an event
this process sets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from multidict import CIMultiDict


async def fetch(
    url: str, method: str = "GET", **kwargs: Any
) -> tuple[int, CIMultiDict[str], bytes]:
    """Status, headers and body bytes exactly as sent: no redirects followed, nothing
    decompressed."""
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.request(method, url, allow_redirects=False, **kwargs) as resp,
    ):
        return resp.status, CIMultiDict(resp.headers), await resp.read()


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, limit: float = 10.0, every: float = 0.1
) -> None:
    """Until ``check()`` holds; past ``limit`` seconds, fail saying ``what`` was awaited."""
    try:
        async with asyncio.timeout(limit):
            while not await check():  # noqa: ASYNC110 - a condition in another process
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"not within {limit:g} s: {what}") from None


async def happens(event: asyncio.Event, what: str, limit: float = 5.0) -> None:
    """Until ``event`` is set (by a backend or handler in this process); past ``limit``
    seconds, fail saying ``what`` was awaited."""
    try:
        async with asyncio.timeout(limit):
            await event.wait()
    except TimeoutError:
        raise AssertionError(f"not within {limit:g} s: {what}") from None
