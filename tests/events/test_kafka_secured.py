"""Events and links over TLS and mutual TLS to a real broker (Tansu behind stunnel), a
TLS failure named, and a refused SASL login that loses nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiokafka.helpers import create_ssl_context

from gateway.events.spool import read_all
from tests.client import eventually, fetch
from tests.conftest import Broker
from tests.events.secured_kafka import TlsBroker, TlsFiles, make_certificates
from tests.events_support import consume, tracking_config, values
from tests.support import in_process_gateway


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    (tmp_path / "tls").mkdir()
    return make_certificates(tmp_path / "tls", trustme.CA())


def running(tmp_path: Path, *, mutual: bool) -> Iterator[TlsBroker]:
    broker = TlsBroker(tmp_path / "tls", mutual=mutual).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[TlsBroker]:
    yield from running(tmp_path, mutual=False)


@pytest.fixture
def mtls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[TlsBroker]:
    """Stunnel verifying client certificates: mutual TLS."""
    yield from running(tmp_path, mutual=True)


async def post_events(gw: Any, count: int) -> list[str]:
    ids = []
    for i in range(count):
        status, _, body = await fetch(gw.url(f"/str/v1/n/{i}"), "POST", json={})
        assert status == 200, body
        ids.append(json.loads(body)["event_id"])
    return ids


async def ready_events(gw: Any) -> dict[str, Any]:
    body = (await fetch(gw.url("/_gateway/ready")))[2]
    detail: dict[str, Any] = json.loads(body)["checks"]["events"]
    return detail


async def test_events_reach_kafka_over_tls(tmp_path: Path, tls_broker: TlsBroker) -> None:
    config = tracking_config(tmp_path, tls_broker.bootstrap)
    ca = tls_broker.directory / "ca.pem"
    config["kafka"]["tls"] = {"ca_file": str(ca)}
    async with in_process_gateway(config, tmp_path) as gw:
        assert await ready_events(gw) == {"ok": True, "detail": "kafka"}
        sent = await post_events(gw, 5)
    security = {"security_protocol": "SSL", "ssl_context": create_ssl_context(cafile=str(ca))}
    records = await consume(tls_broker.bootstrap, config["kafka"]["topic"], 5, **security)
    assert sorted(event["event_id"] for event in values(records)) == sorted(sent)


async def test_events_and_links_over_mutual_tls(
    tmp_path: Path, mtls_broker: TlsBroker, tls_files: TlsFiles
) -> None:
    config = tracking_config(tmp_path, mtls_broker.bootstrap)
    tls = {"ca_file": str(tls_files.ca), "cert_file": str(tls_files.client_cert),
           "key_file": str(tls_files.client_key)}  # fmt: skip
    config["kafka"]["tls"] = tls
    config["redirects"] = {"topic": f"links-{config['kafka']['topic']}",
                           "admin_token": "t" * 32}  # fmt: skip
    config["routes"].insert(0, {"name": "go", "match": {"path_prefix": "/go"}, "redirect": {}})
    async with in_process_gateway(config, tmp_path) as gw:
        admin = {"Authorization": "Bearer " + "t" * 32}
        link = {"slug": "spring", "target": "https://shop.example/sale"}
        created = await fetch(
            gw.url("/_gateway/links", listener="admin"), "POST", json=link, headers=admin
        )
        assert created[0] == 201, created
        status, headers, _ = await fetch(gw.url("/go/spring"))
        assert (status, headers["Location"]) == (302, "https://shop.example/sale")
        sent = await post_events(gw, 3)
    context = create_ssl_context(
        cafile=str(tls_files.ca), certfile=str(tls_files.client_cert),
        keyfile=str(tls_files.client_key),
    )  # fmt: skip
    security = {"security_protocol": "SSL", "ssl_context": context}
    records = await consume(mtls_broker.bootstrap, config["kafka"]["topic"], 4, **security)
    tracked = [e for e in values(records) if e["event_type"] == "track"]
    assert sorted(e["event_id"] for e in tracked) == sorted(sent)
    links = await consume(mtls_broker.bootstrap, config["redirects"]["topic"], 1, **security)
    assert json.loads(links[0].value)["target"] == "https://shop.example/sale"


async def test_an_untrusted_broker_certificate_is_named_and_events_are_kept(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other)
    config = tracking_config(tmp_path, tls_broker.bootstrap)
    config["kafka"]["tls"] = {"ca_file": str(other)}
    async with in_process_gateway(config, tmp_path) as gw:
        events = await ready_events(gw)
        sent = await post_events(gw, 3)  # durable: answered once fsynced to the spool
        metrics = (await fetch(gw.url("/_gateway/metrics", listener="admin")))[2].decode()
    assert events["ok"] is False
    assert events["detail"].startswith("TLS verification failed: "), events
    assert events["detail"].endswith("; events are spooled")
    assert 'gateway_producer_errors_total{reason="tls"}' in metrics
    kept = [json.loads(record.value)["event_id"] for _, record in read_all(tmp_path / "spool")]
    assert sorted(kept) == sorted(sent)


async def test_a_refused_sasl_login_spools_and_a_fixed_config_replays_everything(
    tmp_path: Path, broker_factory: type[Broker]
) -> None:
    # Tansu 0.6 with --authentication refuses every SCRAM login (its in-memory store
    # keeps no users), which is what a wrong password looks like to the gateway.
    secured = broker_factory(args=("--authentication",)).start()
    config = tracking_config(tmp_path, secured.bootstrap)
    config["kafka"]["sasl"] = {"mechanism": "SCRAM-SHA-512", "username": "gw",
                               "password": "wrong"}  # fmt: skip
    async with in_process_gateway(config, tmp_path) as gw:
        events = await ready_events(gw)
        sent = await post_events(gw, 4)
        metrics = (await fetch(gw.url("/_gateway/metrics", listener="admin")))[2].decode()
    assert events["ok"] is False
    assert events["detail"].startswith("authentication failed (SCRAM-SHA-512 as 'gw'): ")
    assert 'gateway_producer_errors_total{reason="auth"}' in metrics
    # The operator fixes the settings (here: a broker the gateway may use) and restarts.
    fixed = broker_factory().start()
    config["kafka"]["bootstrap_servers"] = [fixed.bootstrap]
    del config["kafka"]["sasl"]
    async with in_process_gateway(config, tmp_path) as gw:

        async def delivered() -> bool:
            return (await ready_events(gw))["detail"] == "kafka"

        await eventually(delivered, "the spool is replayed and events go direct", 30)
    records = await consume(fixed.bootstrap, config["kafka"]["topic"], 4)
    assert sorted(event["event_id"] for event in values(records)) == sorted(sent)
