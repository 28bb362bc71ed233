"""TLS termination from certificate files: SNI choice, default, live reload, redirects."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from gateway.config import ConfigError, parse_config
from tests.support import base_config, in_process_gateway


def write_pair(ca: trustme.CA, directory: Path, name: str, *hosts: str) -> dict[str, str]:
    cert = ca.issue_cert(*hosts)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for pem in cert.cert_chain_pems[1:]:
        with cert_path.open("ab") as handle:
            handle.write(pem.bytes())
    cert.private_key_pem.write_to_path(str(key_path))
    return {"cert": str(cert_path), "key": str(key_path)}


def tls_config(tmp_path: Path, ca: trustme.CA, **tls: Any) -> dict[str, Any]:
    config = base_config(tmp_path)
    config["server"]["listeners"].append({"name": "https", "port": 0, "tls": True})
    config["server"]["listeners"].append({"name": "plain", "port": 0, "redirect_to_https": 8443})
    config["tls"] = {
        "certificates": [
            write_pair(ca, tmp_path, "default", "default.test"),
            write_pair(ca, tmp_path, "site", "site.test", "www.site.test"),
            write_pair(ca, tmp_path, "wild", "*.wild.test"),
        ],
        **tls,
    }
    return config


async def peer_names(port: int, server_name: str | None, ca: trustme.CA) -> list[str]:
    """The DNS names of the certificate the gateway presents for ``server_name``."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=server_name or ""
    )
    cert = writer.get_extra_info("peercert")
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() in (None, "http/1.1")
    writer.close()
    await writer.wait_closed()
    return [value for kind, value in cert["subjectAltName"] if kind == "DNS"]


async def test_certificate_chosen_by_sni(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with in_process_gateway(tls_config(tmp_path, ca), tmp_path) as gw:
        port = gw.ports["https"]
        assert await peer_names(port, "site.test", ca) == ["site.test", "www.site.test"]
        assert await peer_names(port, "WWW.Site.Test", ca) == ["site.test", "www.site.test"]
        assert await peer_names(port, "a.wild.test", ca) == ["*.wild.test"]
        assert await peer_names(port, "a.b.wild.test", ca) == ["default.test"]
        assert await peer_names(port, "unknown.test", ca) == ["default.test"]


async def test_https_request_verifies_against_the_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with in_process_gateway(tls_config(tmp_path, ca), tmp_path) as gw:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        connector = aiohttp.TCPConnector(ssl=context, resolver=_Loopback())
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"https://site.test:{gw.ports['https']}/"
            async with session.get(url) as resp:
                assert (resp.status, await resp.text()) == (200, "Hello from the gateway\n")


async def test_minimum_tls_version_is_enforced(tmp_path: Path) -> None:
    ca = trustme.CA()
    config = tls_config(tmp_path, ca, min_version="1.3")
    async with in_process_gateway(config, tmp_path) as gw:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.check_hostname = False
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection("127.0.0.1", gw.ports["https"], ssl=context)


async def test_replaced_certificate_is_served_without_dropping_connections(tmp_path: Path) -> None:
    ca = trustme.CA()
    config = tls_config(tmp_path, ca, reload_interval=0.1)
    async with in_process_gateway(config, tmp_path) as gw:
        port = gw.ports["https"]
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.check_hostname = False
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                       server_hostname="site.test")  # fmt: skip
        fresh = write_pair(ca, tmp_path / "..", "next", "site.test", "new.site.test")
        os.replace(fresh["cert"], config["tls"]["certificates"][1]["cert"])
        os.replace(fresh["key"], config["tls"]["certificates"][1]["key"])
        async with asyncio.timeout(5):
            while await peer_names(port, "site.test", ca) != ["site.test", "new.site.test"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        # The connection opened before the swap still works.
        writer.write(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
        writer.close()
        await writer.wait_closed()


async def test_http_listener_redirects_to_https_except_acme_challenges(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with in_process_gateway(tls_config(tmp_path, ca), tmp_path) as gw:
        async with aiohttp.ClientSession() as session:
            url = gw.url("/shop/cart?x=1", listener="plain")
            async with session.post(url, headers={"Host": "site.test"}, allow_redirects=False) as r:
                assert (r.status, r.headers["Location"]) == (
                    308, "https://site.test:8443/shop/cart?x=1"
                )  # fmt: skip
            challenge = gw.url("/.well-known/acme-challenge/token", listener="plain")
            async with session.get(challenge, allow_redirects=False) as r:
                assert r.status == 200  # routed, not redirected (the hello route answers)


def test_invalid_certificate_file_is_a_config_error(tmp_path: Path) -> None:
    ca = trustme.CA()
    config = tls_config(tmp_path, ca)
    Path(config["tls"]["certificates"][2]["cert"]).write_text("not a certificate")
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config).encode(), env={})
    (issue,) = caught.value.issues
    assert issue.path == "tls.certificates[2]"
    assert "not a readable PEM certificate" in issue.message


class _Loopback(aiohttp.abc.AbstractResolver):
    """Resolves every name to 127.0.0.1, so the client sends real SNI for test names."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": 2,
                 "proto": 0, "flags": 0}]  # fmt: skip

    async def close(self) -> None:
        return None
