"""Certificates over ACME against a real Pebble: HTTP-01 and TLS-ALPN-01 issuance, live
renewal, failures that keep the current certificate, EAB, the lock between workers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yarl
from cryptography import x509

from gateway.config import Acme, parse_config
from gateway.observability.metrics import Metrics
from gateway.process.sockets import bind_listener
from gateway.process.worker import Worker
from gateway.tls.renewal import Outcome, Renewer, backoff, renew_at
from gateway.tls.storage import CertificateInfo, RenewalState, Storage
from tests.acme_support import Pebble
from tests.client import eventually
from tests.support import HELLO, base_config

PebbleFactory = Callable[..., Pebble]


class AcmeGateway:
    def __init__(self, worker: Worker, ports: dict[str, int], pebble: Pebble, storage: Path):
        self.worker = worker
        self.ports = ports
        self.pebble = pebble
        self.storage = storage

    def admin(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['admin']}/_gateway/{path}"

    async def renew(self, limit: float = 30.0) -> tuple[int, list[dict[str, str]]]:
        """POST certificates/renew, again while the renewer's own check holds the lock."""
        async with asyncio.timeout(limit), aiohttp.ClientSession() as session:
            while True:
                async with session.post(self.admin("certificates/renew")) as resp:
                    status, body = resp.status, await resp.json()
                if status != 409:
                    return status, body["results"]
                await asyncio.sleep(0.1)

    async def issued(self, *domains: str, limit: float = 30.0) -> None:
        """Until this worker serves a CA-issued certificate for every domain."""
        certificates = self.worker.certificates
        assert certificates is not None
        async with asyncio.timeout(limit):
            while True:
                served = dict(certificates.store.expiries())
                issued = all(served.get(d) is not None for d in domains)
                if issued and not certificates.store.challenges:
                    return
                await asyncio.sleep(0.05)


def acme_config(
    tmp_path: Path, ports: dict[str, int], pebble: Pebble, **acme: Any
) -> dict[str, Any]:
    config = base_config(tmp_path)
    config["server"]["listeners"] = [
        # As deployed: plain HTTP redirects to HTTPS, except the ACME challenges.
        {"name": "public", "port": ports["public"], "redirect_to_https": ports["https"]},
        {"name": "https", "port": ports["https"], "tls": True},
        {"name": "admin", "port": ports["admin"], "admin": True},
    ]
    config["tls"] = {
        "reload_interval": 0.2,
        "acme": {
            "directory": pebble.directory,
            "domains": ["a.test"],
            "email": "ops@a.test",
            "agree_to_terms": True,
            "ca_bundle": pebble.ca_bundle,
            "storage": str(tmp_path / "acme"),
            "retry_min": 0.2,
            "retry_max": max(1.0, acme.get("retry_min", 0)),
            **acme,
        },
    }
    return config


def bind_ports() -> tuple[list[Any], dict[str, int]]:
    from gateway.config import Listener

    sockets = []
    for name, tls, admin in (
        ("public", False, False),
        ("https", True, False),
        ("admin", False, True),
    ):
        listener = Listener(name=name, port=0, tls=tls, admin=admin)
        sockets.append(bind_listener(listener))
    ports = {
        name: sock.getsockname()[1]
        for name, sock in zip(("public", "https", "admin"), sockets, strict=True)
    }
    return sockets, ports


@contextlib.asynccontextmanager
async def acme_gateway(
    tmp_path: Path,
    pebble_factory: PebbleFactory,
    *,
    pebble_options: dict[str, Any] | None = None,
    start_pebble: bool = True,
    validate_on: dict[str, int] | None = None,
    **acme: Any,
) -> AsyncIterator[AcmeGateway]:
    """A worker on bound sockets, and a Pebble that validates on those ports (or on
    ``validate_on``'s)."""
    sockets, ports = bind_ports()
    target = validate_on or ports
    pebble = pebble_factory(
        http_port=target["public"],
        tls_port=target["https"],
        run=start_pebble,
        **(pebble_options or {}),
    )
    config = acme_config(tmp_path, ports, pebble, **acme)
    parsed = parse_config(json.dumps(config).encode(), env=os.environ)
    worker = Worker(parsed, list(zip(parsed.server.listeners, sockets, strict=True)))
    try:
        async with worker:
            yield AcmeGateway(worker, ports, pebble, tmp_path / "acme")
    finally:
        for sock in sockets:
            sock.close()


async def https_get(
    port: int, name: str, context: ssl.SSLContext, requests: int = 1
) -> tuple[int, list[bytes]]:
    """GETs on one kept-alive connection: (serial of the certificate, response heads)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=name
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        heads = []
        for _ in range(requests):
            writer.write(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == HELLO.encode()
            heads.append(head)
        return x509.load_der_x509_certificate(der).serial_number, heads
    finally:
        writer.close()


async def test_http01_issues_a_certificate_that_verifies_against_pebble(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    async with acme_gateway(tmp_path, pebble_factory, domains=["a.test", "b.test"]) as gw:
        await gw.issued("a.test", "b.test")
        context = gw.pebble.client_context()
        for name in ("a.test", "b.test"):
            _, heads = await https_get(gw.ports["https"], name, context)
            assert heads[0].startswith(b"HTTP/1.1 200 OK\r\n")
        # The account key and certificate keys are the gateway's secrets.
        assert stat.S_IMODE((gw.storage / "account.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((gw.storage / "a.test" / "key.pem").stat().st_mode) == 0o600
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.admin("certificates")) as resp:
                report = await resp.json()
            async with session.get(gw.admin("metrics")) as resp:
                metrics = await resp.text()
            async with session.get(gw.admin("ready")) as resp:
                ready = await resp.json()
        names = [c["name"] for c in report["certificates"]]
        assert names == ["a.test", "b.test"]
        assert all(not c["placeholder"] and c["last_error"] is None for c in report["certificates"])
        not_after = x509.load_pem_x509_certificate(
            (gw.storage / "a.test" / "cert.pem").read_bytes()
        ).not_valid_after_utc
        assert _gauge(metrics, "a.test") == not_after.timestamp()
        assert 'gateway_acme_orders_total{result="issued"} 2.0' in metrics
        assert ready["checks"]["certificates"]["ok"] is True
        assert (
            f"a.test: expires {not_after.isoformat()}" in ready["checks"]["certificates"]["detail"]
        )


def _gauge(metrics: str, name: str) -> float:
    prefix = f'gateway_certificate_expiry_timestamp_seconds{{name="{name}"}} '
    line = next(line for line in metrics.splitlines() if line.startswith(prefix))
    return float(line[len(prefix) :])


async def test_tls_alpn01_issues_a_certificate(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    async with acme_gateway(tmp_path, pebble_factory, challenge="tls-alpn-01") as gw:
        await gw.issued("a.test")
        _, heads = await https_get(gw.ports["https"], "a.test", gw.pebble.client_context())
        assert heads[0].startswith(b"HTTP/1.1 200 OK\r\n")
        # Pebble validated over TLS only: no HTTP-01 request reached the plain listener.
        gw.worker.flush_access_log()
        uris = [
            json.loads(line)["uri"] for line in (tmp_path / "access.log").read_text().splitlines()
        ]
        assert uris == ["/"]  # the one GET above


async def test_placeholder_is_served_until_the_first_certificate(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    # The CA is down at start: the HTTPS listener serves a self-signed placeholder, the
    # order is retried with backoff, and the certificate arrives once the CA is up.
    async with acme_gateway(tmp_path, pebble_factory, start_pebble=False) as gw:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        _, writer = await asyncio.open_connection(
            "127.0.0.1", gw.ports["https"], ssl=insecure, server_hostname="a.test"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        placeholder = x509.load_der_x509_certificate(der)
        assert placeholder.issuer == placeholder.subject  # self-signed
        state_file = gw.storage / "a.test" / "state.json"

        async def failed() -> bool:
            return state_file.exists() and orjson.loads(state_file.read_bytes())["failures"] >= 1

        await eventually(failed, "an order fails: the CA is down")
        state = orjson.loads(state_file.read_bytes())
        assert "127.0.0.1" in state["last_error"]  # the CA's address it could not reach
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.admin("ready")) as resp:
                detail = (await resp.json())["checks"]["certificates"]["detail"]
        assert detail.startswith("a.test: self-signed placeholder until ACME issues one")
        gw.pebble.start()
        await gw.issued("a.test")
        await https_get(gw.ports["https"], "a.test", gw.pebble.client_context())


async def test_forced_renewal_swaps_the_certificate_without_dropping_a_connection(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    async with acme_gateway(tmp_path, pebble_factory) as gw:
        await gw.issued("a.test")
        context = gw.pebble.client_context()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gw.ports["https"], ssl=context, server_hostname="a.test"
        )
        old = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert await gw.renew() == (200, [{"domain": "a.test", "status": "issued", "detail": ""}])
        new_serial, _ = await https_get(gw.ports["https"], "a.test", context)
        assert new_serial != x509.load_der_x509_certificate(old).serial_number
        # The connection opened before the swap still works.
        writer.write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()


async def test_ca_down_keeps_the_current_certificate_and_schedules_a_retry(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    async with acme_gateway(tmp_path, pebble_factory, retry_min=600, retry_max=3600) as gw:
        await gw.issued("a.test")
        context = gw.pebble.client_context()
        serial, _ = await https_get(gw.ports["https"], "a.test", context)
        gw.pebble.stop()
        before = time.time()
        status, (result,) = await gw.renew()
        assert status == 502
        assert result["status"] == "failed"
        port = yarl.URL(gw.pebble.directory).port
        assert result["detail"] == (
            f"HTTPSConnectionPool(host='127.0.0.1', port={port}): Max retries exceeded with url:"
            f" /dir (Caused by NewConnectionError(\"HTTPSConnection(host='127.0.0.1', port={port}):"
            ' Failed to establish a new connection: [Errno 111] Connection refused"))'
        )
        assert (await https_get(gw.ports["https"], "a.test", context))[0] == serial
        state = orjson.loads((gw.storage / "a.test" / "state.json").read_bytes())
        assert state["failures"] == 1
        assert before + 540 <= state["next_attempt"] <= time.time() + 660  # 600 s +-10%
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.admin("ready")) as resp:
                ready = await resp.json()
        assert ready["status"] == "ready"  # still serving a valid certificate
        assert "last attempt failed" in ready["checks"]["certificates"]["detail"]


async def test_a_failed_order_is_retried_until_the_ca_returns(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    """Issue 27, D6: with the CA down, a forced renewal fails and ``ready`` says so;
    once the CA is back the order is made again at its next attempt, and the error
    clears from ``ready`` and ``certificates``."""
    async with acme_gateway(tmp_path, pebble_factory, retry_min=0.5, retry_max=1) as gw:
        await gw.issued("a.test")
        context = gw.pebble.client_context()
        serial, _ = await https_get(gw.ports["https"], "a.test", context)
        gw.pebble.stop()
        status, (result,) = await gw.renew()
        assert (status, result["status"]) == (502, "failed")
        ready = await get_json(gw.admin("ready"))
        assert "last attempt failed" in ready["checks"]["certificates"]["detail"]
        failed_at = time.time()

        async def next_attempt() -> float:
            async with aiohttp.ClientSession() as session:
                async with session.get(gw.admin("metrics")) as resp:
                    text = await resp.text()
            name = 'gateway_acme_next_attempt_timestamp_seconds{name="a.test"} '
            line = next((x for x in text.splitlines() if x.startswith(name)), name + "0")
            return float(line[len(name) :])

        async def scheduled() -> bool:  # the retry's time, in the metrics
            return await next_attempt() > failed_at

        await eventually(scheduled, "the next attempt in the metrics")
        gw.pebble.start()

        async def retried() -> bool:
            report = await get_json(gw.admin("certificates"))
            return report["certificates"][0]["last_error"] is None

        await eventually(retried, "the order made again and issued", limit=30)
        ready = await get_json(gw.admin("ready"))
        new_serial, _ = await https_get(gw.ports["https"], "a.test", gw.pebble.client_context())

        async def cleared() -> bool:
            return await next_attempt() == 0.0

        await eventually(cleared, "no next attempt once issued")
    assert "last attempt failed" not in ready["checks"]["certificates"]["detail"]
    assert new_serial != serial


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.json()


async def test_failed_validation_is_reported_and_the_placeholder_stays(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    # Pebble validates on ports where nothing listens.
    sockets, nobody = bind_ports()
    for sock in sockets:
        sock.close()
    async with acme_gateway(
        tmp_path, pebble_factory, validate_on=nobody, retry_min=600, retry_max=3600
    ) as gw:
        status, (result,) = await gw.renew()
        assert status == 502
        assert result["status"] == "failed"
        assert result["detail"].startswith("challenge failed: a.test: http-01 ")
        assert "connection refused" in result["detail"]
        assert not (gw.storage / "a.test" / "cert.pem").exists()
        assert dict(gw.worker.certificates.store.expiries())["a.test"] is None  # type: ignore[union-attr]
        assert list((gw.storage / "http-01").iterdir()) == []  # the answer was withdrawn


async def test_external_account_binding(tmp_path: Path, pebble_factory: PebbleFactory) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    async with acme_gateway(
        tmp_path,
        pebble_factory,
        pebble_options={"eab_keys": {"kid-1": key}},
        eab={"kid": "kid-1", "hmac_key": key},
    ) as gw:
        await gw.issued("a.test")  # this CA takes no account without a binding (below)
        _, heads = await https_get(gw.ports["https"], "a.test", gw.pebble.client_context())
        issued = _counter(gw.worker.metrics.render().decode(), "issued")
    assert heads[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert issued == 1


async def test_a_ca_requiring_eab_refuses_an_account_without_it(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    async with acme_gateway(
        tmp_path, pebble_factory, pebble_options={"eab_keys": {"kid-1": key}}, retry_min=600
    ) as gw:
        status, (result,) = await gw.renew()
        assert status == 502
        assert result["status"] == "failed"
        assert "externalAccountRequired" in result["detail"]


async def test_bad_nonces_are_retried_until_the_order_succeeds(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    # Pebble rejects a share of good nonces on purpose; the library retries a request
    # once, and a failed order is retried with backoff.
    async with acme_gateway(
        tmp_path, pebble_factory, pebble_options={"nonce_reject": 20}, retry_min=0.1
    ) as gw:
        await gw.issued("a.test", limit=50)
        _, heads = await https_get(gw.ports["https"], "a.test", gw.pebble.client_context())
        issued = _counter(gw.worker.metrics.render().decode(), "issued")
    assert heads[0].startswith(b"HTTP/1.1 200 OK\r\n")  # verified against Pebble's root
    assert issued == 1


async def test_two_workers_one_order(tmp_path: Path, pebble_factory: PebbleFactory) -> None:
    # Two workers on the same storage: one takes the lock and orders, the other loads
    # the files it writes. TLS-ALPN-01 is validated on the first worker's port whichever
    # worker ordered: the challenge certificate crosses through the storage.
    async with acme_gateway(tmp_path, pebble_factory, challenge="tls-alpn-01") as first:
        sockets, ports = bind_ports()
        config = acme_config(tmp_path, ports, first.pebble, challenge="tls-alpn-01")
        config["server"]["access_log"]["path"] = str(tmp_path / "second.log")
        config["spool"]["dir"] = str(tmp_path / "second-spool")
        parsed = parse_config(json.dumps(config).encode(), env=os.environ)
        second = Worker(parsed, list(zip(parsed.server.listeners, sockets, strict=True)))
        async with second:
            await first.issued("a.test")
            second_gw = AcmeGateway(second, ports, first.pebble, first.storage)
            await second_gw.issued("a.test")
            context = first.pebble.client_context()
            serial_one, _ = await https_get(first.ports["https"], "a.test", context)
            serial_two, _ = await https_get(ports["https"], "a.test", context)
            assert serial_one == serial_two
            orders = [
                _counter(w.metrics.render().decode(), "issued") for w in (first.worker, second)
            ]
            assert sorted(orders) == [0.0, 1.0]
        for sock in sockets:
            sock.close()


def _counter(metrics: str, result: str) -> float:
    prefix = f'gateway_acme_orders_total{{result="{result}"}} '
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


NO_CHALLENGE = (404, b"404 Not Found: no such ACME challenge\n")
DOTS = (400, b"400 Bad Request: dot segments are not allowed in paths\n")  # before routing


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("/.well-known/acme-challenge/", NO_CHALLENGE),
        ("/.well-known/acme-challenge/short", NO_CHALLENGE),
        ("/.well-known/acme-challenge/..%2F..%2Faccount.key", DOTS),
        ("/.well-known/acme-challenge/%2e%2e/account.key", DOTS),
        ("/.well-known/acme-challenge/aaaaaaaaaaaaaaaaaaaaaaaa/../../account.key", DOTS),
        ("/.well-known/acme-challenge/" + "a" * 200, NO_CHALLENGE),
        ("/.well-known/acme-challenge/unknownTokenAAAAAAAAAAAAAAAAAAAAAA", NO_CHALLENGE),
    ],
)
async def test_hostile_challenge_paths_never_read_other_files(
    tmp_path: Path, pebble_factory: PebbleFactory, path: str, answer: tuple[int, bytes]
) -> None:
    # No CA needed: its absence also keeps an order from outliving the test.
    async with acme_gateway(tmp_path, pebble_factory, start_pebble=False, retry_min=600) as gw:
        url = yarl.URL(f"http://127.0.0.1:{gw.ports['public']}{path}", encoded=True)
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                body = await resp.read()
        assert (resp.status, body) == answer


async def test_published_challenge_answer_is_served_exactly(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    async with acme_gateway(tmp_path, pebble_factory, retry_min=600) as gw:
        await gw.issued("a.test")  # the renewer clears answers left over when it starts
        token = "tok-" + "A" * 40
        Storage(str(gw.storage)).offer_http(token, f"{token}.thumbprint")
        url = f"http://127.0.0.1:{gw.ports['public']}/.well-known/acme-challenge/{token}"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                assert resp.status == 200
                assert await resp.read() == f"{token}.thumbprint".encode()
                assert resp.headers["Content-Type"] == "text/plain"
                assert resp.headers["Cache-Control"] == "no-store"
            async with session.post(url) as resp:
                assert resp.status == 405
                assert resp.headers["Allow"] == "GET, HEAD"


def _stored_certificate(storage: Storage, domain: str, days: int) -> CertificateInfo:
    from gateway.tls.issuer import self_signed

    pem = self_signed(domain, datetime.timedelta(days=days))
    key, cert = pem.split(b"-----BEGIN CERTIFICATE-----")
    storage.save_certificate(domain, b"-----BEGIN CERTIFICATE-----" + cert, key)
    info = storage.read_certificate(domain)
    assert info is not None
    return info


def _renewer(tmp_path: Path, now: list[float], **acme: Any) -> tuple[Renewer, Storage]:
    settings = Acme.model_validate_json(
        json.dumps(
            {"directory": "https://127.0.0.1:9/dir", "domains": ["a.test"],
             "agree_to_terms": True, "storage": str(tmp_path / "acme"), **acme}
        )
    )  # fmt: skip
    storage = Storage(settings.storage)
    return Renewer(settings, storage, Metrics(), clock=lambda: now[0]), storage


def test_renewal_is_due_when_a_third_of_the_lifetime_remains(tmp_path: Path) -> None:
    now = [time.time()]
    renewer, storage = _renewer(tmp_path, now)
    info = _stored_certificate(storage, "a.test", days=90)
    due = renew_at(info, 1 / 3)
    lifetime = (info.not_after - info.not_before).total_seconds()
    third = info.not_after.timestamp() - lifetime / 3
    assert third - 0.02 * lifetime <= due <= third  # the jitter only brings it forward
    state = storage.read_state("a.test")
    storage.write_state("a.test", RenewalState(directory="https://127.0.0.1:9/dir"))
    now[0] = due - 60
    assert renewer.check()[0] == [Outcome("a.test", "current")]
    now[0] = due + 60
    (outcome,), _ = renewer.check()  # due: ordered from a CA that is not there
    assert outcome.status == "failed"
    assert state.failures == 0 and storage.read_state("a.test").failures == 1


def test_failed_orders_wait_for_their_backoff(tmp_path: Path) -> None:
    now = [1_000_000_000.0]
    renewer, storage = _renewer(tmp_path, now, retry_min=60, retry_max=3600)
    (first,), wake = renewer.check()
    assert first.status == "failed"
    state = storage.read_state("a.test")
    assert 54 <= state.next_attempt - now[0] <= 66
    assert wake == pytest.approx(state.next_attempt - now[0])  # wakes for the retry
    now[0] += 30
    assert renewer.check()[0] == [Outcome("a.test", "waiting", state.last_error)]
    now[0] = state.next_attempt + 1
    (again,), _ = renewer.check()
    assert again.status == "failed"
    assert storage.read_state("a.test").failures == 2


def test_a_failed_forced_renewal_is_retried_before_the_certificate_is_due(
    tmp_path: Path,
) -> None:
    """Issue 27, D6: a forced renewal that failed is retried at its next attempt, not
    forgotten until the certificate falls due months later."""
    now = [time.time()]
    renewer, storage = _renewer(tmp_path, now, retry_min=60, retry_max=3600)
    info = _stored_certificate(storage, "a.test", days=90)
    storage.write_state("a.test", RenewalState(directory="https://127.0.0.1:9/dir"))
    assert now[0] < renew_at(info, 1 / 3)  # not due
    (forced,), wake = renewer.check(force=True)
    assert forced.status == "failed"
    state = storage.read_state("a.test")
    assert wake == pytest.approx(state.next_attempt - now[0])
    assert renewer.failures() == {"a.test": state}
    now[0] += 30
    assert renewer.check()[0] == [Outcome("a.test", "waiting", state.last_error)]
    now[0] = state.next_attempt + 1
    (retried,), _ = renewer.check()
    assert retried.status == "failed"  # it ordered again
    assert storage.read_state("a.test").failures == 2


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    assert [backoff(n, 60, 21600, 0.5) for n in (1, 2, 3, 9, 10, 50)] == [
        60, 120, 240, 15360, 21600, 21600,
    ]  # fmt: skip
    assert backoff(1, 60, 21600, 0.0) == pytest.approx(54)
    assert backoff(1, 60, 21600, 1.0) == pytest.approx(66)


def test_a_certificate_from_another_directory_is_ordered_again_at_once(tmp_path: Path) -> None:
    now = [time.time()]
    renewer, storage = _renewer(tmp_path, now)
    _stored_certificate(storage, "a.test", days=90)  # far from due
    storage.write_state("a.test", RenewalState(directory="https://staging.example/dir"))
    (outcome,), _ = renewer.check()
    assert outcome.status == "failed"  # it ordered, from a CA that is not there


async def test_a_certificate_from_another_directory_is_replaced(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    storage = Storage(str(tmp_path / "acme"))
    old = _stored_certificate(storage, "a.test", days=90)  # valid, not due: another CA's
    storage.write_state("a.test", RenewalState(directory="https://staging.example/dir"))
    served: list[int] = []
    async with acme_gateway(tmp_path, pebble_factory) as gw:

        async def pebbles_served() -> bool:
            try:
                serial, _ = await https_get(gw.ports["https"], "a.test", gw.pebble.client_context())
            except ssl.SSLCertVerificationError:
                return False  # still the stored one, which Pebble's root does not sign
            served.append(serial)
            return True

        await eventually(pebbles_served, "a certificate from the configured CA", limit=30)
    info = storage.read_certificate("a.test")
    assert info is not None and info.serial != old.serial
    assert served == [info.serial]
    assert storage.read_state("a.test").directory == gw.pebble.directory


def test_a_due_certificate_in_backoff_sleeps_until_its_retry(tmp_path: Path) -> None:
    now = [time.time()]
    renewer, storage = _renewer(tmp_path, now, retry_min=600, retry_max=3600)
    info = _stored_certificate(storage, "a.test", days=90)
    now[0] = renew_at(info, 1 / 3) + 60  # due
    (outcome,), wake = renewer.check()
    assert outcome.status == "failed"  # the CA is not there
    state = storage.read_state("a.test")
    assert wake == pytest.approx(state.next_attempt - now[0])  # not every second
    assert wake > 500


def test_a_certificate_that_is_not_the_keys_pair_counts_as_missing(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "acme"))
    _stored_certificate(storage, "a.test", days=90)
    first_key = Path(storage.pair("a.test").key).read_bytes()
    _stored_certificate(storage, "a.test", days=90)
    assert storage.read_certificate("a.test") is not None
    # A crash between the two writes: the new key beside the old certificate.
    Path(storage.pair("a.test").key).write_bytes(first_key)
    assert storage.read_certificate("a.test") is None


async def test_forced_renewal_while_another_process_orders_is_refused(
    tmp_path: Path, pebble_factory: PebbleFactory
) -> None:
    async with acme_gateway(tmp_path, pebble_factory) as gw:
        await gw.issued("a.test")
        with Storage(str(gw.storage)).lock(wait=False):  # as another process would
            async with aiohttp.ClientSession() as session:
                async with session.post(gw.admin("certificates/renew")) as resp:
                    assert resp.status == 409
                    assert (await resp.json())["results"] == [
                        {"domain": "a.test", "status": "busy",
                         "detail": "another process holds the lock"}
                    ]  # fmt: skip


def test_another_process_holding_the_lock_means_no_order(tmp_path: Path) -> None:
    now = [time.time()]
    renewer, storage = _renewer(tmp_path, now)
    with storage.lock(wait=False):
        outcomes, _ = renewer.check()
    assert outcomes == [Outcome("a.test", "busy", "another process holds the lock")]
    assert not (tmp_path / "acme" / "a.test").exists()


async def test_certs_on_the_command_line(tmp_path: Path, pebble_factory: PebbleFactory) -> None:
    """``gateway certs list`` and ``renew [NAME]`` through the admin API."""
    async with acme_gateway(tmp_path, pebble_factory) as gw:
        await gw.issued("a.test")
        path = tmp_path / "cli.json"
        path.write_text(json.dumps(acme_config(tmp_path, gw.ports, gw.pebble)))
        url = f"http://127.0.0.1:{gw.ports['admin']}"

        def certs(*argv: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "gateway", "certs", "--config", str(path)]
            return subprocess.run([*command, "--url", url, *argv], capture_output=True,
                                  text=True, timeout=120)  # fmt: skip

        listed = await asyncio.to_thread(certs, "list")
        served = gw.worker.certificates
        assert served is not None
        (expiry,) = [not_after for _, not_after in served.store.expiries()]
        assert expiry is not None
        assert (listed.returncode, listed.stdout) == (0, f"a.test\texpires {expiry.isoformat()}\n")
        renewed = await asyncio.to_thread(certs, "renew", "a.test")
        assert (renewed.returncode, renewed.stdout) == (0, "a.test\tissued\n")
        unknown = await asyncio.to_thread(certs, "renew", "b.test")
        assert unknown.returncode == 1
        assert "404 Not Found: 'b.test' is not one of tls.acme.domains" in unknown.stderr
