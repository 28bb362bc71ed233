"""Events and links to Apache Kafka over each secured listener kind it serves natively:
TLS and mutual TLS, SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (over plaintext and
over TLS) and OAUTHBEARER; and each refusal (a wrong password, an unknown user, a CA
nobody trusts, a missing client certificate) named, with nothing lost once fixed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.events.spool import read_all
from tests.apache_kafka import ApacheKafka, Listener, unsecured_jws
from tests.client import eventually, fetch
from tests.events_support import consume, tracking_config, values
from tests.support import in_process_gateway


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


async def error_metrics(gw: Any) -> str:
    gw.worker.metrics.flush()
    return (await fetch(gw.url("/_gateway/metrics", listener="admin")))[2].decode()


def secured_config(
    tmp_path: Path, kafka: ApacheKafka, listener: Listener, **security: Any
) -> dict[str, Any]:
    """Events to ``listener``; ``security`` is the config's ``tls`` and ``sasl``."""
    config = tracking_config(tmp_path, kafka.address(listener))
    config["kafka"].update(security)
    return config


def tls(kafka: ApacheKafka, *, mutual: bool = False) -> dict[str, str]:
    files = kafka.tls
    settings = {"ca_file": str(files.ca)}
    if mutual:
        settings |= {"cert_file": str(files.client_cert), "key_file": str(files.client_key)}
    return settings


async def delivered(kafka: ApacheKafka, config: dict[str, Any], sent: list[str]) -> None:
    """Every event sent is in the topic (read back over the plaintext listener)."""
    records = await consume(kafka.bootstrap, config["kafka"]["topic"], len(sent))
    assert sorted(event["event_id"] for event in values(records)) == sorted(sent)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("listener", ["sasl_plaintext", "sasl_ssl"])
async def test_a_sasl_login_succeeds_and_events_arrive(
    tmp_path: Path, kafka_broker: ApacheKafka, mechanism: str, listener: Listener
) -> None:
    users = kafka_broker.plain_users if mechanism == "PLAIN" else kafka_broker.scram_users
    sasl = {"mechanism": mechanism, "username": "gw", "password": users["gw"]}
    security: dict[str, Any] = {"sasl": sasl}
    if listener == "sasl_ssl":
        security["tls"] = tls(kafka_broker)
    else:
        security["allow_plaintext_sasl"] = True
    config = secured_config(tmp_path, kafka_broker, listener, **security)
    async with in_process_gateway(config, tmp_path) as gw:
        assert await ready_events(gw) == {"ok": True, "detail": "kafka"}
        sent = await post_events(gw, 3)
    await delivered(kafka_broker, config, sent)


async def test_an_oauthbearer_token_from_its_file_logs_in(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    token = tmp_path / "token"
    token.write_text(unsecured_jws("gw"))
    sasl = {"mechanism": "OAUTHBEARER", "token_file": str(token)}
    config = secured_config(tmp_path, kafka_broker, "sasl_ssl", sasl=sasl, tls=tls(kafka_broker))
    async with in_process_gateway(config, tmp_path) as gw:
        assert await ready_events(gw) == {"ok": True, "detail": "kafka"}
        sent = await post_events(gw, 2)
    await delivered(kafka_broker, config, sent)


async def test_events_reach_kafka_over_tls(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = secured_config(tmp_path, kafka_broker, "ssl", tls=tls(kafka_broker))
    async with in_process_gateway(config, tmp_path) as gw:
        assert await ready_events(gw) == {"ok": True, "detail": "kafka"}
        sent = await post_events(gw, 5)
    await delivered(kafka_broker, config, sent)


async def test_events_and_links_over_mutual_tls(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = secured_config(tmp_path, kafka_broker, "mtls", tls=tls(kafka_broker, mutual=True))
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
    records = await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 4)
    tracked = [e for e in values(records) if e["event_type"] == "track"]
    assert sorted(e["event_id"] for e in tracked) == sorted(sent)
    links = await consume(kafka_broker.bootstrap, config["redirects"]["topic"], 1)
    assert json.loads(links[0].value)["target"] == "https://shop.example/sale"


REFUSED: list[tuple[str, Listener, dict[str, Any], str, str]] = [
    ("wrong-scram-password", "sasl_plaintext",
     {"sasl": {"mechanism": "SCRAM-SHA-512", "username": "gw", "password": "wrong"}},
     "auth", "authentication failed (SCRAM-SHA-512 as 'gw'): "),
    ("unknown-scram-user", "sasl_plaintext",
     {"sasl": {"mechanism": "SCRAM-SHA-256", "username": "nobody", "password": "x" * 12}},
     "auth", "authentication failed (SCRAM-SHA-256 as 'nobody'): "),
    ("wrong-plain-password", "sasl_plaintext",
     {"sasl": {"mechanism": "PLAIN", "username": "gw", "password": "wrong"},
      "allow_plaintext_sasl": True},
     "auth", "authentication failed (PLAIN as 'gw'): "),
    ("untrusted-broker-certificate", "ssl", {"tls": "untrusted-ca"},
     "tls", "TLS verification failed: unable to get local issuer certificate"),
    ("no-client-certificate", "mtls", {"tls": "ca-only"},
     "tls", "TLS failed: "),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "listener", "security", "reason", "detail"), REFUSED, ids=[r[0] for r in REFUSED]
)
async def test_a_refusal_is_named_and_the_events_are_kept(
    tmp_path: Path,
    kafka_broker: ApacheKafka,
    case: str,
    listener: Listener,
    security: dict[str, Any],
    reason: str,
    detail: str,
) -> None:
    security = dict(security)
    if security.get("tls") == "untrusted-ca":
        security["tls"] = {"ca_file": str(kafka_broker.tls.untrusted_ca)}
    elif security.get("tls") == "ca-only":
        security["tls"] = tls(kafka_broker)
    config = secured_config(tmp_path, kafka_broker, listener, **security)
    async with in_process_gateway(config, tmp_path) as gw:
        events = await ready_events(gw)
        sent = await post_events(gw, 3)  # durable: answered once fsynced to the spool
        metrics = await error_metrics(gw)
    assert events["ok"] is False
    assert events["detail"].startswith(detail), events
    assert events["detail"].endswith("; events are spooled")
    assert f'gateway_producer_errors_total{{reason="{reason}"}}' in metrics
    kept = [json.loads(record.value)["event_id"] for _, record in read_all(tmp_path / "spool")]
    assert sorted(kept) == sorted(sent)


async def test_a_refused_login_spools_and_the_fixed_config_replays_everything(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    sasl = {"mechanism": "SCRAM-SHA-512", "username": "gw", "password": "wrong"}
    config = secured_config(tmp_path, kafka_broker, "sasl_ssl", sasl=sasl, tls=tls(kafka_broker))
    async with in_process_gateway(config, tmp_path) as gw:
        sent = await post_events(gw, 4)
    # The operator fixes the password and restarts: the spool is replayed.
    config["kafka"]["sasl"]["password"] = kafka_broker.scram_users["gw"]
    async with in_process_gateway(config, tmp_path) as gw:

        async def direct() -> bool:
            return (await ready_events(gw))["detail"] == "kafka"

        await eventually(direct, "the spool is replayed and events go direct", 30)
    await delivered(kafka_broker, config, sent)
