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
from tests.clock import jump_clock, turns
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
        assert await peer_names(port, "site.test.", ca) == ["site.test", "www.site.test"]


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


async def test_plain_http_and_stalled_handshakes_on_the_tls_port(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with in_process_gateway(tls_config(tmp_path, ca), tmp_path) as gw:
        port = gw.ports["https"]
        # Clients that connect and never start a handshake.
        stalled = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        # Plain HTTP to the TLS port: no HTTP answer, the connection is closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        async with asyncio.timeout(5):
            reply = await reader.read()
        assert b"HTTP/1.1" not in reply
        writer.close()
        # Meanwhile, a real client is served.
        assert await peer_names(port, "site.test", ca) == ["site.test", "www.site.test"]
        for _, stalled_writer in stalled:
            stalled_writer.close()


@pytest.mark.asyncio_loop  # read_header passes on a clock moved by hand
async def test_a_client_that_never_finishes_its_handshake_is_cut_at_read_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    config = tls_config(tmp_path, ca)
    config["server"]["timeouts"] = {"read_header": 600}
    async with in_process_gateway(config, tmp_path) as gw:
        clock = jump_clock(monkeypatch)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["https"])
        await turns()  # accepted: its handshake deadline is set
        clock.advance(599)
        await turns()
        assert not reader.at_eof()
        clock.advance(1.5)
        async with asyncio.timeout(5):  # real time: uvloop's own default would be 60 s
            assert await reader.read() == b""
        writer.close()


async def test_a_stopping_worker_closes_connections_still_in_their_handshake(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    config = tls_config(tmp_path, ca)
    # Waiting for either would outlast the bound below.
    config["server"]["timeouts"] = {"read_header": 600}
    config["server"]["shutdown_timeout"] = 600
    async with asyncio.timeout(20):
        async with in_process_gateway(config, tmp_path) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["https"])
            await turns()  # accepted; the handshake waits for a ClientHello
        assert await reader.read() == b""
    writer.close()


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


async def _get_over(
    gw: Any, ca: trustme.CA, host: str, path: str = "/", listener: str = "https"
) -> aiohttp.ClientResponse:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    connector = aiohttp.TCPConnector(ssl=context, resolver=_Loopback())
    async with aiohttp.ClientSession(connector=connector) as session:
        scheme = "https" if listener == "https" else "http"
        url = f"{scheme}://{host}:{gw.ports[listener]}{path}"
        async with session.get(url, allow_redirects=False) as resp:
            await resp.read()
            return resp


def hsts_config(tmp_path: Path, ca: trustme.CA) -> dict[str, Any]:
    config = tls_config(
        tmp_path,
        ca,
        hsts=[
            {"hosts": ["site.test"], "max_age": 63072000, "include_subdomains": True,
             "preload": True},
            {"hosts": ["*.wild.test"], "max_age": 300},
        ],
    )  # fmt: skip
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "page.html").write_bytes(b"<p>static</p>")
    config["routes"].insert(
        0,
        {"name": "files", "match": {"path_prefix": "/files/"},
         "static": {"root": str(tmp_path / "www")}},
    )  # fmt: skip
    return config


async def test_hsts_is_sent_over_https_for_the_configured_hosts(tmp_path: Path) -> None:
    ca = trustme.CA()
    async with in_process_gateway(hsts_config(tmp_path, ca), tmp_path) as gw:
        resp = await _get_over(gw, ca, "site.test")
        assert resp.headers["Strict-Transport-Security"] == (
            "max-age=63072000; includeSubDomains; preload"
        )
        resp = await _get_over(gw, ca, "a.wild.test")
        assert resp.headers["Strict-Transport-Security"] == "max-age=300"
        # Streamed answers (static files here) carry it too.
        resp = await _get_over(gw, ca, "site.test", "/files/page.html")
        assert resp.status == 200
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=63072000")


async def test_hsts_is_not_sent_to_other_hosts_or_over_plain_http(tmp_path: Path) -> None:
    ca = trustme.CA()
    config = hsts_config(tmp_path, ca)
    config["server"]["listeners"][0]["name"] = "public"
    async with in_process_gateway(config, tmp_path) as gw:
        resp = await _get_over(gw, ca, "default.test")
        assert resp.status == 200
        assert "Strict-Transport-Security" not in resp.headers
        resp = await _get_over(gw, ca, "www.site.test")  # not a subdomain rule of its own
        assert "Strict-Transport-Security" not in resp.headers
        resp = await _get_over(gw, ca, "site.test", listener="public")  # RFC 6797 §7.2
        assert resp.status == 200
        assert "Strict-Transport-Security" not in resp.headers


def _acme_config(tmp_path: Path, **acme: Any) -> dict[str, Any]:
    config = base_config(tmp_path)
    config["server"]["listeners"].append({"name": "https", "port": 0, "tls": True})
    config["tls"] = {"acme": {"domains": ["a.test"], "agree_to_terms": True, **acme}}
    return config


@pytest.mark.parametrize(
    ("tls", "path", "message"),
    [
        ({"acme": {"domains": ["*.a.test"], "agree_to_terms": True}}, "tls.acme.domains[0]",
         "a wildcard name needs dns-01"),
        ({"acme": {"domains": ["A.test"], "agree_to_terms": True}}, "tls.acme.domains[0]",
         "not a lowercase DNS name"),
        ({"acme": {"domains": ["a.test", "a.test"], "agree_to_terms": True}},
         "tls.acme.domains", "must not repeat"),
        ({"acme": {"domains": ["a.test"]}}, "tls.acme.agree_to_terms", "must be true"),
        ({"acme": {"domains": ["a.test"], "agree_to_terms": True, "retry_min": 10,
                   "retry_max": 5}}, "tls.acme.retry_max", "at least retry_min"),
        ({"acme": {"domains": ["a.test"], "agree_to_terms": True, "ca_bundle": "/nope.pem"}},
         "tls.acme.ca_bundle", "no such file"),
        ({"acme": {"domains": ["a.test"], "agree_to_terms": True,
                   "eab": {"kid": "k", "hmac_key": "not base64url!"}}},
         "tls.acme.eab.hmac_key", "pattern"),
        ({}, "tls", "needs certificates, or acme to obtain them"),
        ({"acme": {"domains": ["lock"], "agree_to_terms": True}}, "tls.acme.domains[0]",
         "with a dot"),
        ({"certificates": [], "acme": {"domains": ["a.test"], "agree_to_terms": True},
          "hsts": [{"hosts": ["a.test"], "preload": True}]}, "tls.hsts[0]",
         "preload needs include_subdomains"),
        ({"certificates": [], "hsts": [{"hosts": ["bad host"]}]}, "tls.hsts[0].hosts[0]",
         "not a lowercase host name"),
    ],
)  # fmt: skip
def test_acme_and_hsts_config_errors_name_the_key(
    tmp_path: Path, tls: dict[str, Any], path: str, message: str
) -> None:
    config = _acme_config(tmp_path)
    config["tls"] = tls
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config).encode(), env={})
    assert any(issue.path == path and message in issue.message for issue in caught.value.issues), (
        caught.value.issues
    )


def test_acme_challenge_needs_a_listener_it_can_be_validated_on(tmp_path: Path) -> None:
    config = _acme_config(tmp_path, challenge="tls-alpn-01")
    config["server"]["listeners"].pop()  # no tls listener left
    config["server"]["listeners"][0]["name"] = "public"
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config).encode(), env={})
    assert "tls-alpn-01 needs a tls listener" in str(caught.value)
    config = _acme_config(tmp_path)
    config["server"]["listeners"] = [{"name": "https", "port": 0, "tls": True}]
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config).encode(), env={})
    assert "http-01 needs a plain-HTTP listener" in str(caught.value)


class _Loopback(aiohttp.abc.AbstractResolver):
    """Resolves every name to 127.0.0.1, so the client sends real SNI for test names."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": 2,
                 "proto": 0, "flags": 0}]  # fmt: skip

    async def close(self) -> None:
        return None
