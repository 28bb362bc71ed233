"""Apache Kafka itself, for tests that need a real broker's behaviour: SASL (PLAIN, SCRAM,
OAUTHBEARER), TLS and mutual TLS on listeners of their own, and a log that outlives a
restart or a SIGKILL. Its jars come from scripts/kafka-jars.sh (Maven Central, cached)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import ssl
import subprocess
import time
import uuid
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import trustme
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError, for_code
from cryptography.hazmat.primitives import serialization

from tests.ports import free_ports, wait_listening

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
Listener = Literal["plaintext", "sasl_plaintext", "ssl", "mtls", "sasl_ssl"]
LISTENERS: tuple[Listener, ...] = ("plaintext", "sasl_plaintext", "ssl", "mtls", "sasl_ssl")
PROTOCOLS: dict[Listener, str] = {
    "plaintext": "PLAINTEXT",
    "sasl_plaintext": "SASL_PLAINTEXT",
    "ssl": "SSL",
    "mtls": "SSL",
    "sasl_ssl": "SASL_SSL",
}
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")
USER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # a word to Kafka's JAAS parser
# Serial GC and C1 only start the broker fastest (measured: 4.4 s against G1's 7.3 s).
JVM = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
    "-Djava.security.egd=file:/dev/urandom",
    "-Dlog4j2.shutdownHookEnabled=false",  # no hook to register while the JVM is exiting
)


@cache
def kafka_libs() -> Path:
    """The folder of broker jars: scripts/kafka-jars.sh fills it once (Maven), then names it."""
    script = ROOT / "scripts" / "kafka-jars.sh"
    found = subprocess.run(["sh", str(script)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(found.stdout.strip().splitlines()[-1])


def unsecured_jws(subject: str = "gw", lifetime: float = 3600.0) -> str:
    """A token Kafka's unsecured OAUTHBEARER validator takes: a JWS with ``alg: none`` and
    an empty signature, naming ``subject``, valid for ``lifetime`` seconds."""
    now = int(time.time())
    header = {"alg": "none"}
    claims = {"sub": subject, "iat": now, "exp": now + int(lifetime)}
    return ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims)) + "."


@dataclass(frozen=True)
class Record:
    """A record read back from a topic."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    partition: int
    offset: int


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for clients: the broker's CA and a client pair it signed (mutual TLS), and
    an unrelated CA with a client pair of its own (trusts nothing, trusted by nobody)."""

    ca: Path
    client_cert: Path
    client_key: Path
    untrusted_ca: Path
    untrusted_client_cert: Path
    untrusted_client_key: Path


class ApacheKafka:
    """A single-node KRaft broker (broker and controller in one JVM) in ``directory``,
    with one loopback port per listener kind. Restarted, it keeps its ports and its log."""

    def __init__(
        self,
        directory: Path,
        *,
        plain_users: Mapping[str, str] | None = None,
        scram_users: Mapping[str, str] | None = None,
        num_partitions: int = 1,
        settings: Mapping[str, str] | None = None,
        log_level: str = "WARN",
        libs: Path | None = None,
        advertised: Mapping[Listener, int] | None = None,
    ) -> None:
        self.directory = directory
        self.plain_users = dict({"gw": "gw-plain-secret"} if plain_users is None else plain_users)
        self.scram_users = dict({"gw": "gw-scram-secret"} if scram_users is None else scram_users)
        for name in [*self.plain_users, *self.scram_users]:
            if not USER_NAME.fullmatch(name):
                raise ValueError(f"user name {name!r}: a letter, then letters, digits, _ or -")
        self.num_partitions = num_partitions
        self.settings = dict(settings or {})  # more server.properties, over the defaults
        self.log_level = log_level  # of logs/server.log: INFO shows logins and elections
        self.libs = libs
        *listener_ports, self.controller_port = free_ports(len(LISTENERS) + 1)
        self.ports: dict[Listener, int] = dict(zip(LISTENERS, listener_ports, strict=True))
        # Where clients are told to connect: a listener's own port, unless a test puts a
        # proxy in front of it (tests/kafka_proxy.py).
        self.advertised = {**self.ports, **(advertised or {})}
        self.logs = directory / "logs"  # server.log (WARN and up), console.log
        self.logs.mkdir(parents=True, exist_ok=True)
        self.tls = _write_certificates(directory / "tls")
        self.process: subprocess.Popen[bytes] | None = None
        self.formatted = False
        self.start_seconds = 0.0  # how long the last start() took

    def address(self, kind: Listener = "plaintext") -> str:
        """``host:port`` of the listener of this kind."""
        return f"127.0.0.1:{self.ports[kind]}"

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listener, as the in-memory broker's fixture names its address."""
        return self.address("plaintext")

    def ssl_context(self, *, mutual: bool = False) -> ssl.SSLContext:
        """A client context trusting the broker's CA, with the client pair for mutual TLS."""
        context = ssl.create_default_context(cafile=self.tls.ca)
        if mutual:
            context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return context

    def start(self, limit: float = 60.0) -> ApacheKafka:
        """Starts the broker (formatting its storage the first time) and returns once it
        serves metadata on PLAINTEXT and every listener accepts connections."""
        if self.process is not None:
            raise RuntimeError("kafka is running already")
        began = time.monotonic()
        libs = self.libs or kafka_libs()
        properties = self.directory / "server.properties"
        properties.write_text(
            "".join(f"{key}={_escape(value)}\n" for key, value in self._properties().items())
        )
        if not self.formatted:
            self._format(libs, properties)
        with (self.logs / "console.log").open("ab") as console:  # the JVM's own complaints
            self.process = subprocess.Popen(
                ["java", "-Xms64m", "-Xmx1g", *JVM, *self._log_options(), "-cp", f"{libs}/*",
                 "kafka.Kafka", str(properties)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            self._wait_ready(self.process, began + limit)
        except BaseException as exc:
            self.kill()
            exc.add_note(f"kafka's logs: {self.logs}")
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """SIGTERM, a controlled shutdown; SIGKILL if that takes over 30 s."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, what is in the page cache stays there."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()

    def restart(self, limit: float = 60.0) -> ApacheKafka:
        """Stops the broker if it runs, then starts it on the same ports and log."""
        self.stop()
        return self.start(limit)

    async def create_topic(
        self, name: str, partitions: int = 1, *, compacted: bool = False
    ) -> None:
        """Creates a topic (replication factor 1); raises the broker's error if it can't."""
        configs = {"cleanup.policy": "compact"} if compacted else {}
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            response = await admin.create_topics([NewTopic(name, partitions, 1, None, configs)])
        finally:
            await admin.close()
        for topic, code, *message in response.topic_errors:
            if code:
                raise for_code(code)(f"{topic}: {message[0] if message else ''}")

    async def records(self, topic: str, *, limit: float = 20.0) -> list[Record]:
        """Every record of ``topic`` up to its current end, by partition then offset; raises
        ``UnknownTopicOrPartitionError`` rather than have the broker create the topic."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async with asyncio.timeout(limit):
                if topic not in await consumer.topics():
                    raise UnknownTopicOrPartitionError(topic)
                consumer.subscribe([topic])  # no group: every partition, from the start
                while not (partitions := consumer.assignment()):  # noqa: ASYNC110 - its task
                    await asyncio.sleep(0.05)
                ends: dict[Any, int] = await consumer.end_offsets(list(partitions))
                found: list[Record] = []
                while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                    batches = await consumer.getmany(timeout_ms=200)
                    found += [
                        Record(m.key, m.value, tuple(m.headers), m.partition, m.offset)
                        for messages in batches.values()
                        for m in messages
                    ]
        finally:
            await consumer.stop()
        return sorted(found, key=lambda record: (record.partition, record.offset))

    def acl(self, action: Literal["--add", "--remove"], *arguments: str) -> None:
        """Kafka's own AclCommand against this broker (it needs ``authorizer.class.name``
        in the settings), e.g. ``acl("--add", "--allow-principal", "User:gw", ...)``."""
        libs = self.libs or kafka_libs()
        done = subprocess.run(
            ["java", "-Xmx128m", *JVM, *self._log_options(), "-cp", f"{libs}/*",
             "org.apache.kafka.tools.AclCommand", "--bootstrap-server", self.bootstrap,
             action, "--force", *arguments],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"kafka acls {action} failed: {done.stdout.decode()}")

    def _log_options(self) -> list[str]:
        config = ROOT / "tests" / "kafka" / "log4j2.properties"
        return [
            f"-Dlog4j2.configurationFile={config}",
            f"-Dkafka.logs.dir={self.logs}",
            f"-Dkafka.log.level={self.log_level}",
        ]

    def _format(self, libs: Path, properties: Path) -> None:
        """Formats the log directory for a new cluster, SCRAM users included."""
        scram = [
            arg
            for name, password in self.scram_users.items()
            for mechanism in SCRAM
            for arg in ("--add-scram", _scram_credential(mechanism, name, password))
        ]
        cluster_id = _b64url(uuid.uuid4().bytes)
        done = subprocess.run(
            ["java", "-Xmx256m", *JVM, *self._log_options(), "-cp", f"{libs}/*",
             "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
             "-c", str(properties), *scram],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"kafka storage format failed: {done.stdout.decode()}")
        self.formatted = True

    def _properties(self) -> dict[str, str]:
        """server.properties: combined mode, a static one-voter quorum, a listener per kind
        (inter-broker and controller traffic in plaintext), everything replicated once."""
        listeners = {kind.upper(): port for kind, port in self.ports.items()}
        advertised = {kind.upper(): port for kind, port in self.advertised.items()}
        protocols = {kind.upper(): protocol for kind, protocol in PROTOCOLS.items()}
        protocols["CONTROLLER"] = "PLAINTEXT"
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": ",".join(
                [f"{name}://127.0.0.1:{port}" for name, port in listeners.items()]
                + [f"CONTROLLER://127.0.0.1:{self.controller_port}"]
            ),
            "advertised.listeners": ",".join(
                f"{name}://127.0.0.1:{port}" for name, port in advertised.items()
            ),
            "listener.security.protocol.map": ",".join(
                f"{name}:{protocol}" for name, protocol in protocols.items()
            ),
            "log.dirs": str(self.directory / "data"),
            "num.partitions": str(self.num_partitions),
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # log.flush.* keep their defaults: acks=all is answered before any fsync, and
            # what a SIGKILLed process wrote is still in the page cache when it restarts.
            # A broker SIGKILLed and started again waits out its old registration's session
            # (DUPLICATE_BROKER_REGISTRATION): 4 s rather than 9 s, heartbeats to match.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            # TLS: PEM files; the mutual-TLS listener alone asks for a client certificate.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.directory / "tls" / "server.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.ca),
            "listener.name.mtls.ssl.client.auth": "required",
        }
        for kind in ("sasl_plaintext", "sasl_ssl"):
            properties.update(self._sasl_properties(f"listener.name.{kind}."))
        return {**properties, **self.settings}

    def _sasl_properties(self, prefix: str) -> dict[str, str]:
        """PLAIN users in the listener's JAAS config, SCRAM users in the metadata log (added
        at format time), OAUTHBEARER checked by Kafka's validator for unsecured JWS."""
        plain = " ".join(f"user_{name}={_jaas(pw)}" for name, pw in self.plain_users.items())
        oauth = "org.apache.kafka.common.security.oauthbearer"
        properties = {
            "sasl.enabled.mechanisms": ",".join(["PLAIN", *SCRAM, "OAUTHBEARER"]),
            "plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain};"
            ),
            "oauthbearer.sasl.jaas.config": (
                f'{oauth}.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";'
            ),
            "oauthbearer.sasl.server.callback.handler.class": (
                f"{oauth}.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler"
            ),
        }
        for mechanism in SCRAM:
            properties[f"{mechanism.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        return {prefix + key: value for key, value in properties.items()}

    def _wait_ready(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        """Until the broker serves metadata naming itself (registered and unfenced), then
        until every listener accepts connections; raises if the JVM exits first."""
        wait_listening(self.ports["plaintext"], process, "kafka", deadline - time.monotonic())
        while not _apart(_serves_metadata(self.bootstrap)):
            if process.poll() is not None:
                raise RuntimeError(f"kafka exited with {process.returncode}: see {self.logs}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kafka served no metadata in time: see {self.logs}")
            time.sleep(0.1)
        for port in self.ports.values():
            wait_listening(port, process, "kafka", max(deadline - time.monotonic(), 1.0))


async def _serves_metadata(bootstrap: str) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except KafkaError:
        return False
    finally:
        await client.close()


def _apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs ``coroutine`` on a loop of its own thread: start() is synchronous, and may be
    called from a test that already runs a loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _write_certificates(directory: Path) -> TlsFiles:
    """The broker's key and chain in one PEM file (Kafka's PEM key store wants PKCS#8; trustme
    writes EC keys as SEC1), the CA that signed it, and client pairs from two CAs."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, stranger = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    chain = b"".join(pem.bytes() for pem in server.cert_chain_pems)
    (directory / "server.pem").write_bytes(_pkcs8(server.private_key_pem.bytes()) + chain)
    ca.cert_pem.write_to_path(directory / "ca.pem")
    stranger.cert_pem.write_to_path(directory / "untrusted-ca.pem")
    for name, issuer in (("client", ca), ("untrusted-client", stranger)):
        client = issuer.issue_cert("gateway.client.example")
        client.cert_chain_pems[0].write_to_path(directory / f"{name}.crt")
        client.private_key_pem.write_to_path(directory / f"{name}.key")
    for key in ("server.pem", "client.key", "untrusted-client.key"):
        (directory / key).chmod(0o600)
    return TlsFiles(
        directory / "ca.pem",
        directory / "client.crt",
        directory / "client.key",
        directory / "untrusted-ca.pem",
        directory / "untrusted-client.crt",
        directory / "untrusted-client.key",
    )


def _scram_credential(mechanism: str, name: str, password: str) -> str:
    """StorageTool's --add-scram value, salted here: its parser splits at commas and Java
    reads a non-ASCII argument in the locale's charset; base64 has neither problem."""
    salt = os.urandom(24)
    digest = mechanism.removeprefix("SCRAM-").replace("-", "").lower()  # sha256, sha512
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, 4096)
    encode = base64.b64encode
    return (
        f"{mechanism}=[name={name},iterations=4096,"
        f"salt={encode(salt).decode()},saltedpassword={encode(salted).decode()}]"
    )


def _pkcs8(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jaas(value: str) -> str:
    """A quoted JAAS option value (Kafka's parser is a StreamTokenizer)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _escape(value: str) -> str:
    """A .properties value: Java reads the file as Latin-1 and takes backslashes as escapes."""
    value = value.replace("\\", "\\\\")
    if value.isascii() and value.isprintable():
        return value
    units = value.encode("utf-16-be")
    return "".join(
        chr(code) if 0x20 <= code < 0x7F else f"\\u{code:04x}"
        for code in (int.from_bytes(units[i : i + 2], "big") for i in range(0, len(units), 2))
    )
