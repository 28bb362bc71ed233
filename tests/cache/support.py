"""A gateway with one cached proxy route in front of a scripted origin, both on one
clock the test moves (no sleeping for freshness to run out)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from multidict import CIMultiDict

from tests.cache.origin import Origin, origin
from tests.client import fetch
from tests.support import InProcessGateway, base_config, in_process_gateway, with_routes


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))  # whole seconds, as Date headers are

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Cached:
    """The gateway, its origin and their clock."""

    def __init__(self, gw: InProcessGateway, origin: Origin, clock: Clock) -> None:
        self.gw, self.origin, self.clock = gw, origin, clock

    async def get(
        self, path: str = "/page", method: str = "GET", **headers: str
    ) -> tuple[int, CIMultiDict[str], bytes]:
        fields = {name.replace("_", "-"): value for name, value in headers.items()}
        return await fetch(self.gw.url(path), method, headers=fields)

    async def purge(self, **body: Any) -> tuple[int, Any]:
        status, _, raw = await fetch(
            self.gw.url("/_gateway/cache/purge", listener="admin"), "POST", json=body
        )
        return status, raw

    def url(self, path: str) -> str:
        return self.gw.url(path)


def cache_config(tmp_path: Path, upstream: str, **cache: Any) -> dict[str, Any]:
    config = with_routes(
        base_config(tmp_path),
        {"name": "site", "proxy": {"upstreams": [upstream]}, "cache": cache},
    )
    config["cache"] = {"purge_file": str(tmp_path / "purges.jsonl")}
    return config


@contextlib.asynccontextmanager
async def cached(tmp_path: Path, **cache: Any) -> AsyncIterator[Cached]:
    clock = Clock()
    async with origin() as scripted:
        scripted.clock = clock
        config = cache_config(tmp_path, scripted.url, **cache)
        async with in_process_gateway(config, tmp_path) as gw:
            assert gw.worker.cache is not None
            gw.worker.cache.clock = clock
            yield Cached(gw, scripted, clock)
