"""kafka.tls and kafka.sasl: what the config accepts and refuses, the options every
Kafka client gets, the OAUTHBEARER token file, and what a failure is called."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiokafka.errors import KafkaConnectionError
from cryptography.hazmat.primitives import serialization

from gateway.config import ConfigError, Kafka, parse_config
from gateway.events.kafka_security import TokenFileProvider, client_options, describe_failure


def kafka_config(**kafka: Any) -> dict[str, Any]:
    return {
        "server": {"listeners": [{"name": "public", "port": 8080}]},
        "kafka": {"bootstrap_servers": ["b1:9093"], **kafka},
    }


def issues(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(data).encode(), env={})
    return [str(issue) for issue in caught.value.issues]


def kafka_of(**kafka: Any) -> Kafka:
    config = parse_config(json.dumps(kafka_config(**kafka)).encode(), env={})
    assert config.kafka is not None
    return config.kafka


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_security_protocol_follows_from_tls_and_sasl(tmp_path: Path) -> None:
    scram = {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "p"}
    assert kafka_of().security_protocol == "PLAINTEXT"
    assert kafka_of(tls=True).security_protocol == "SSL"
    assert kafka_of(tls={}).security_protocol == "SSL"
    assert kafka_of(sasl=scram).security_protocol == "SASL_PLAINTEXT"
    assert kafka_of(tls=True, sasl=scram).security_protocol == "SASL_SSL"


def test_plain_sasl_without_tls_is_refused_unless_allowed() -> None:
    plain = {"mechanism": "PLAIN", "username": "key", "password": "secret"}
    assert issues(kafka_config(sasl=plain)) == [
        "kafka.sasl.mechanism: PLAIN without kafka.tls sends the password in clear text: "
        "set kafka.tls, or allow_plaintext_sasl: true if the network is yours"
    ]
    assert kafka_of(sasl=plain, allow_plaintext_sasl=True).security_protocol == "SASL_PLAINTEXT"


def test_incomplete_sasl_settings_name_the_missing_key(tmp_path: Path) -> None:
    assert issues(kafka_config(sasl={"mechanism": "SCRAM-SHA-256", "username": "u"})) == [
        "kafka.sasl.password: is required by SCRAM-SHA-256"
    ]
    assert issues(kafka_config(sasl={"mechanism": "OAUTHBEARER"})) == [
        "kafka.sasl.token_file: is required by OAUTHBEARER"
    ]
    (tmp_path / "token").write_text("\n")
    token = {"mechanism": "OAUTHBEARER", "token_file": str(tmp_path / "token")}
    assert issues(kafka_config(sasl=token)) == [f"kafka.sasl.token_file: {tmp_path}/token: empty"]


def test_tls_files_are_checked(tmp_path: Path, ca: trustme.CA) -> None:
    cert = ca.issue_cert("gateway.client")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    assert issues(kafka_config(tls={"ca_file": str(tmp_path / "nope.pem")})) == [
        f"kafka.tls.ca_file: {tmp_path}/nope.pem: no such file"
    ]
    assert issues(kafka_config(tls={"cert_file": str(tmp_path / "cert.pem")})) == [
        "kafka.tls.key_file: is required with the other (mutual TLS)"
    ]
    # An encrypted key and the wrong password for it.
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"right"),
    )
    (tmp_path / "encrypted.pem").write_bytes(encrypted)
    pair = {"cert_file": str(tmp_path / "cert.pem"), "key_file": str(tmp_path / "encrypted.pem")}
    (problem,) = issues(kafka_config(tls={**pair, "key_password": "wrong"}))
    assert problem.startswith(
        f"kafka.tls.cert_file: {tmp_path}/cert.pem / {tmp_path}/encrypted.pem:"
    )
    assert kafka_of(tls={**pair, "key_password": "right"}).security_protocol == "SSL"


def test_every_client_gets_the_same_security_options(tmp_path: Path, ca: trustme.CA) -> None:
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    kafka = kafka_of(
        tls={"ca_file": str(tmp_path / "ca.pem"), "check_hostname": False},
        sasl={"mechanism": "SCRAM-SHA-256", "username": "gw", "password": "pw"},
    )
    options = client_options(kafka)
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext) and context.check_hostname is False
    assert options == {
        "bootstrap_servers": ["b1:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "gw",
        "sasl_plain_password": "pw",
    }


async def test_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    provider = TokenFileProvider(str(path))
    assert await provider.token() == "first"
    path.write_text("second, longer\n")
    assert await provider.token() == "second, longer"
    path.write_text("")
    with pytest.raises(ValueError, match=f"OAUTHBEARER token file {path} is empty"):
        await provider.token()
    path.unlink()
    with pytest.raises(ValueError, match="No such file or directory"):
        await provider.token()


def test_failures_say_what_failed() -> None:
    scram = kafka_of(sasl={"mechanism": "SCRAM-SHA-512", "username": "gw", "password": "x"})
    try:
        try:
            {}["v"]  # what aiokafka's SCRAM parser meets when the server refused the login
        except KeyError as exc:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]") from exc
    except KafkaConnectionError as exc:
        refused = describe_failure(exc, scram)
    assert (refused.reason, refused.fatal) == ("auth", True)
    assert refused.detail.startswith("authentication failed (SCRAM-SHA-512 as 'gw'):")
    unknown_ca = ssl.SSLCertVerificationError(1, "certificate verify failed")
    unknown_ca.verify_message = "unable to get local issuer certificate"
    tls = describe_failure(unknown_ca, kafka_of(tls=True))
    assert tls.detail == "TLS verification failed: unable to get local issuer certificate"
    down = describe_failure(KafkaConnectionError("Unable to bootstrap"), kafka_of())
    assert (down.reason, down.fatal) == ("unreachable", False)


def test_topic_names_kafka_would_refuse_are_config_errors() -> None:
    assert issues(kafka_config(topic="events/all", topics={"pixel": "px px"})) == [
        "kafka.topic: 'events/all' is not a Kafka topic name (letters, digits, '.', '_', '-')",
        "kafka.topics: 'px px' is not a Kafka topic name (letters, digits, '.', '_', '-')",
    ]


def test_a_missing_topic_is_named() -> None:
    from gateway.events.kafka_security import MissingTopic

    failure = describe_failure(MissingTopic("events-eu"), kafka_of())
    assert failure == type(failure)(
        "topic", "topic 'events-eu' does not exist and the broker did not create it", True
    )
