"""On-demand certificates against Pebble: a name no certificate serves is ordered at its
first handshake when the ask endpoint allows it (that handshake gets the default
certificate, a later one the name's own); a refusal is remembered; the rate cap holds;
names that are not DNS names never reach the ask endpoint."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from tests.backends import serving
from tests.client import eventually
from tests.tls.test_acme import AcmeGateway, PebbleFactory, acme_gateway, https_get


@asynccontextmanager
async def ask_endpoint(*allowed: str) -> AsyncIterator[tuple[str, list[str]]]:
    """The ask URL: 200 for ``allowed`` names, 403 for others; every name asked, kept."""
    asked: list[str] = []

    async def ask(request: web.Request) -> web.Response:
        name = request.query.get("domain", "")
        asked.append(name)
        return web.Response(status=200 if name in allowed else 403)

    app = web.Application()
    app.router.add_get("/ask", ask)
    async with serving(app) as url:
        yield f"{url}/ask", asked


async def handshake(gw: AcmeGateway, name: str) -> int | None:
    """The serial of the certificate served for ``name``, or None when it does not
    verify for that name (the default certificate)."""
    try:
        serial, _ = await https_get(gw.ports["https"], name, gw.pebble.client_context())
    except ssl.SSLCertVerificationError:
        return None
    return serial


async def test_an_allowed_name_is_ordered_at_its_first_handshake(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    async with ask_endpoint("c.test") as (url, asked):
        on_demand = {"ask": url, "refused_for": 60}
        async with acme_gateway(tmp_path, pebble_factory, on_demand=on_demand) as gw:
            await gw.issued("a.test")
            assert await handshake(gw, "c.test") is None  # the default: a.test's

            async def served() -> bool:
                return await handshake(gw, "c.test") is not None

            await eventually(served, "c.test's own certificate", limit=30)
            certificates = gw.worker.certificates
            assert certificates is not None
            assert [name for name, _ in certificates.store.expiries()] == ["a.test", "c.test"]
    assert asked == ["c.test"]  # asked once, however many handshakes


async def test_a_refused_name_is_not_ordered_nor_asked_again(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    async with ask_endpoint() as (url, asked):
        on_demand = {"ask": url, "refused_for": 60}
        async with acme_gateway(tmp_path, pebble_factory, on_demand=on_demand) as gw:
            await gw.issued("a.test")
            assert await handshake(gw, "d.test") is None

            async def answered() -> bool:
                return asked == ["d.test"]

            await eventually(answered, "the ask endpoint asked about d.test")
            for _ in range(3):
                assert await handshake(gw, "d.test") is None
            await asyncio.sleep(0.5)
            assert not (tmp_path / "acme" / "d.test").exists()
    assert asked == ["d.test"]


async def test_orders_a_minute_are_capped(tmp_path: Path, pebble_factory: PebbleFactory) -> None:
    async with ask_endpoint("e1.test", "e2.test") as (url, asked):
        on_demand = {"ask": url, "per_minute": 1}
        async with acme_gateway(tmp_path, pebble_factory, on_demand=on_demand) as gw:
            await gw.issued("a.test")
            await handshake(gw, "e1.test")

            async def first() -> bool:
                return await handshake(gw, "e1.test") is not None

            await eventually(first, "e1.test's certificate", limit=30)
            for _ in range(3):
                assert await handshake(gw, "e2.test") is None
            await asyncio.sleep(0.5)
            assert not (tmp_path / "acme" / "e2.test").exists()
    assert asked == ["e1.test"]  # the cap is checked before the ask endpoint is


@pytest.mark.parametrize("name", ["nodot", "under_score.test", "a-.test", "-a.test"])
async def test_a_name_that_is_not_a_dns_name_is_never_asked_about(
    tmp_path: Path, pebble_factory: PebbleFactory, name: str
) -> None:
    async with ask_endpoint() as (url, asked):
        async with acme_gateway(tmp_path, pebble_factory, on_demand={"ask": url}) as gw:
            await gw.issued("a.test")
            context = gw.pebble.client_context()
            context.check_hostname = False  # an IP or odd name: only the handshake matters
            context.verify_mode = ssl.CERT_NONE
            await https_get(gw.ports["https"], name, context)
            await asyncio.sleep(0.3)
    assert asked == []


def test_only_dns_names_are_queued() -> None:
    async def never(name: str) -> bool:
        raise AssertionError("not ordered")

    from gateway.config import AcmeOnDemand
    from gateway.tls.ondemand import OnDemand

    on_demand = OnDemand(AcmeOnDemand(ask="http://127.0.0.1:9/ask"), never)
    for name in ("1.2.3.4", "nodot", "a..test", "-a.test", "a-.test", "under_score.test",
                 "x" * 64 + ".test", "a.test\x00", "é.test", "a." + "b" * 250):  # fmt: skip
        on_demand.wanted(name)
    assert on_demand._queue.qsize() == 0
    on_demand.wanted("shop.example.com")
    on_demand.wanted("shop.example.com")  # pending already: once
    assert on_demand._queue.qsize() == 1
