"""ACME DNS-01 end to end: the TXT record put into a real authoritative server (Debian's
Knot DNS) by an RFC 2136 update signed with TSIG, Pebble resolving through that server,
a wildcard certificate issued and served, the record removed afterwards."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from gateway.config import ConfigError, parse_config
from gateway.process.worker import Worker
from tests.acme_support import Pebble
from tests.dns_support import KEY_NAME, ZONE, Knot
from tests.tls.test_acme import AcmeGateway, acme_config, bind_ports, https_get


@pytest.fixture
def knot(tmp_path: Path) -> Any:
    server = Knot(tmp_path / "knot").start()
    try:
        yield server
    finally:
        server.stop()


def dns_section(knot: Knot, secret: str | None = None) -> dict[str, Any]:
    tsig = {"name": KEY_NAME, "secret": secret or knot.secret}
    return {"server": knot.server, "zone": ZONE, "tsig": tsig, "propagation_timeout": 10}


@asynccontextmanager
async def dns_gateway(tmp_path: Path, knot: Knot, **acme: Any) -> AsyncIterator[AcmeGateway]:
    """A worker ordering over DNS-01 from a Pebble that resolves through ``knot``."""
    sockets, ports = bind_ports()
    # Pebble's HTTP and TLS ports are never used: DNS-01 is validated over DNS.
    pebble = Pebble(tmp_path / "pebble", knot.port, http_port=9, tls_port=9).start()
    config = acme_config(tmp_path, ports, pebble, challenge="dns-01", **acme)
    parsed = parse_config(json.dumps(config).encode(), env=os.environ)
    worker = Worker(parsed, list(zip(parsed.server.listeners, sockets, strict=True)))
    try:
        async with worker:
            yield AcmeGateway(worker, ports, pebble, tmp_path / "acme")
    finally:
        pebble.stop()
        for sock in sockets:
            sock.close()


async def test_a_wildcard_certificate_is_issued_over_dns01(tmp_path: Path, knot: Knot) -> None:
    async with dns_gateway(tmp_path, knot, domains=[f"*.{ZONE}"], dns=dns_section(knot)) as gw:
        await gw.issued(f"*.{ZONE}")
        context = gw.pebble.client_context()
        for name in (f"www.{ZONE}", f"shop.{ZONE}"):  # any one label under the zone
            serial, _ = await https_get(gw.ports["https"], name, context)
            assert serial > 0
        _, writer = await asyncio.open_connection(
            "127.0.0.1", gw.ports["https"], ssl=context, server_hostname=f"www.{ZONE}"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        names = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        assert names.value.get_values_for_type(x509.DNSName) == [f"*.{ZONE}"]
    assert knot.txt(f"_acme-challenge.{ZONE}") == []  # removed once validated


async def test_an_update_the_server_refuses_fails_the_order_with_its_reason(
    tmp_path: Path, knot: Knot
) -> None:
    wrong = dns_section(knot, secret="d3JvbmctZ2F0ZXdheS1zZWNyZXQtMDEyMzQ1Njc4OQ==")
    async with dns_gateway(tmp_path, knot, domains=[f"www.{ZONE}"], dns=wrong) as gw:
        status, (result,) = await gw.renew()
    assert (status, result["status"]) == (502, "failed")
    assert result["detail"] == (
        f"DNS update refused by {knot.server}: the TSIG key was not accepted "
        "(The peer didn't like the signature we sent)"
    )
    assert knot.txt(f"_acme-challenge.www.{ZONE}") == []


TSIG = {"name": "k", "secret": "c2VjcmV0LXNlY3JldC0x"}
DNS = {"server": "127.0.0.1:53", "zone": ZONE, "tsig": TSIG}


@pytest.mark.parametrize(
    ("acme", "message"),
    [
        ({"domains": [f"*.{ZONE}"]}, "tls.acme.domains[0]: a wildcard name needs dns-01"),
        ({"challenge": "dns-01"}, "tls.acme.dns: dns-01 needs the DNS server"),
        ({"dns": DNS}, 'tls.acme.dns: only used with "challenge": "dns-01"'),
        ({"challenge": "dns-01", "dns": DNS, "on_demand": {"ask": "http://127.0.0.1:9/"}},
         "tls.acme.on_demand: needs http-01 or tls-alpn-01"),
        ({"challenge": "dns-01", "dns": DNS, "domains": ["www.other.test"]},
         f"tls.acme.domains[0]: 'www.other.test' is not in {ZONE}"),
        ({"challenge": "dns-01", "dns": {**DNS, "tsig": {**TSIG, "secret": "no b64 !!!!!!!!!"}}},
         "tls.acme.dns.tsig.secret: must be base64"),
    ],
)  # fmt: skip
def test_dns01_settings_are_checked(tmp_path: Path, acme: dict[str, Any], message: str) -> None:
    class Directory:
        directory, ca_bundle = "https://ca.test/dir", None

    config = acme_config(tmp_path, {"public": 1, "https": 2, "admin": 3}, Directory(), **acme)
    del config["tls"]["acme"]["ca_bundle"]
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config).encode(), env={})
    assert message in str(caught.value)


async def test_the_ca_is_not_asked_before_every_server_shows_the_record(
    tmp_path: Path, knot: Knot
) -> None:
    # A second server of the zone that never receives the update (a secondary that has
    # not caught up): the order fails before the challenge is answered; the record goes.
    lagging = Knot(tmp_path / "lagging").start()
    try:
        section = {**dns_section(knot), "propagation_timeout": 1,
                   "check_servers": [knot.server, lagging.server]}  # fmt: skip
        async with dns_gateway(tmp_path, knot, domains=[f"www.{ZONE}"], dns=section) as gw:
            status, (result,) = await gw.renew()
    finally:
        lagging.stop()
    assert (status, result["status"]) == (502, "failed")
    assert result["detail"] == (
        f"the TXT record at _acme-challenge.www.{ZONE} did not show on {lagging.server} within 1 s"
    )
    assert knot.txt(f"_acme-challenge.www.{ZONE}") == []
