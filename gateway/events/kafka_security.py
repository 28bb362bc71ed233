"""How the gateway's Kafka clients reach a secured cluster, and what to say when they
cannot: one place turns ``kafka.tls`` and ``kafka.sasl`` into aiokafka's options (the
event producer, replay and the link store's clients all take them) and an aiokafka
failure into a reason an operator can act on.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
from dataclasses import dataclass
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context

from gateway.config import Kafka, KafkaTls


class MissingTopic(KafkaError):  # type: ignore[misc]
    """The broker has no such topic and did not create it (auto-creation is off)."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} does not exist and the broker did not create it")
        self.topic = topic


class TokenFileProvider(AbstractTokenProvider):  # type: ignore[misc]
    """OAUTHBEARER tokens from a file, read again whenever it changes: how Kubernetes
    projected tokens and sidecar token fetchers hand them over."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    async def token(self) -> str:
        return await asyncio.to_thread(self.read)

    def read(self) -> str:
        """The current token; raises ``ValueError`` naming the file if there is none."""
        try:
            stat = os.stat(self._path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                with open(self._path) as handle:
                    self._token = handle.read().strip()
                self._stamp = stamp
        except OSError as exc:
            raise ValueError(f"OAUTHBEARER token file {self._path}: {exc.strerror}") from None
        if not self._token:
            raise ValueError(f"OAUTHBEARER token file {self._path} is empty")
        return self._token


def ssl_context_for(config: Kafka) -> ssl.SSLContext | None:
    """The client TLS context of ``kafka.tls``, or None without TLS: built once per
    settings (the files are read at start; ``kafka`` changes need a restart anyway), not
    on every reconnect while Kafka is down (issue 28)."""
    tls = config.tls_settings
    return None if tls is None else _context(tls)


@functools.lru_cache(maxsize=4)
def _context(tls: KafkaTls) -> ssl.SSLContext:
    context: ssl.SSLContext = create_ssl_context(
        cafile=tls.ca_file,
        certfile=tls.cert_file,
        keyfile=tls.key_file,
        password=tls.key_password,
    )
    context.check_hostname = tls.check_hostname
    return context


def connection_options(config: Kafka) -> dict[str, Any]:
    """How any aiokafka connection logs in: security protocol, TLS context, SASL."""
    options: dict[str, Any] = {"security_protocol": config.security_protocol}
    context = ssl_context_for(config)
    if context is not None:
        options["ssl_context"] = context
    sasl = config.sasl
    if sasl is not None:
        options["sasl_mechanism"] = sasl.mechanism
        if sasl.mechanism == "OAUTHBEARER":
            assert sasl.token_file is not None  # the config's checks require it
            options["sasl_oauth_token_provider"] = TokenFileProvider(sasl.token_file)
        else:
            options["sasl_plain_username"] = sasl.username
            options["sasl_plain_password"] = sasl.password
    return options


def client_options(config: Kafka) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    return {"bootstrap_servers": list(config.bootstrap_servers), **connection_options(config)}


_VERIFY_FAILED = re.compile(r"certificate verify failed: ([^(]+?)\s*\(_ssl")


@dataclass(frozen=True, slots=True)
class Failure:
    """Why Kafka did not take events: ``reason`` labels the metric; ``detail`` is what
    ``ready`` and the log say; ``fatal`` ones need an operator (credentials, trust),
    not patience, so they fail readiness."""

    reason: str
    detail: str
    fatal: bool


def describe_failure(exc: BaseException, config: Kafka) -> Failure:
    """What an exception from an aiokafka client means for this config."""
    cause = _chain(exc)[-1]
    if isinstance(cause, ssl.SSLCertVerificationError):
        # "unable to get local issuer certificate" (unknown CA), "Hostname mismatch",
        # "certificate has expired": OpenSSL's words say what failed.
        return Failure("tls", f"TLS verification failed: {cause.verify_message}", True)
    if isinstance(cause, ssl.SSLError):
        return Failure("tls", f"TLS failed: {cause.reason or cause}", True)
    sasl = config.sasl
    if sasl is not None and _is_auth_failure(exc):
        who = f" as {sasl.username!r}" if sasl.username else ""
        return Failure("auth", f"authentication failed ({sasl.mechanism}{who}): {_text(exc)}", True)
    if isinstance(exc, MissingTopic):
        return Failure("topic", str(exc.args[0]), True)
    if verify := _VERIFY_FAILED.search(_text(exc)):  # aiokafka's connect error, in words
        return Failure("tls", f"TLS verification failed: {verify.group(1)}", True)
    if isinstance(exc, TimeoutError):
        return Failure("timeout", "kafka did not acknowledge in time", False)
    if isinstance(cause, KafkaConnectionError | ConnectionError | OSError):
        return Failure("unreachable", f"kafka unreachable: {_text(exc)}", False)
    if isinstance(cause, KafkaError):
        return Failure("kafka", f"kafka error: {_text(exc)}", False)
    return Failure("other", f"kafka client failed: {_text(exc)}", False)


async def diagnose(exc: BaseException, config: Kafka) -> Failure:
    """:func:`describe_failure`; where aiokafka only says it could not bootstrap (it logs
    the reason, a refused login or certificate, and raises a connection error), one
    connection of our own to the first bootstrap server, through aiokafka's, says why."""
    failure = describe_failure(exc, config)
    if failure.reason != "unreachable":
        return failure
    for probe in (_login_probe, _tls_probe):
        found = await probe(config)
        if found is not None and found.reason != "unreachable":
            return found
    return failure


def _first_server(config: Kafka) -> tuple[str, int]:
    host, _, port = config.bootstrap_servers[0].rpartition(":")
    return host.strip("[]"), int(port)


async def _login_probe(config: Kafka) -> Failure | None:
    """A connection as aiokafka's clients make it (API versions, then the SASL login):
    what it raises is what the clients met."""
    from aiokafka.conn import create_conn

    host, port = _first_server(config)
    try:
        async with asyncio.timeout(config.ack_timeout):
            conn = await create_conn(
                host,
                port,
                request_timeout_ms=int(config.ack_timeout * 1000),
                **connection_options(config),
            )
    except Exception as probe:  # whatever it is, it is the answer
        return describe_failure(probe, config)
    conn.close()
    return None


async def _tls_probe(config: Kafka) -> Failure | None:
    """A TLS handshake of our own, and a moment's read: a broker that refuses our client
    certificate says so in an alert after the handshake (TLS 1.3), which aiokafka only
    sees as a closed connection."""
    context = ssl_context_for(config)
    if context is None:
        return None
    host, port = _first_server(config)
    try:
        async with asyncio.timeout(config.ack_timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host
            )
        try:
            async with asyncio.timeout(min(1.0, config.ack_timeout)):
                await reader.read(1)
        except TimeoutError:
            pass  # the broker waits for a request: the handshake was accepted
        finally:
            writer.close()
    except ssl.SSLError as probe:
        return describe_failure(probe, config)
    except (OSError, TimeoutError):
        return None
    return None


def _is_auth_failure(exc: BaseException) -> bool:
    """aiokafka reports a refused login in several ways: its SASL errors, and for SCRAM a
    server-final message without a verifier, which its parser meets as ``KeyError('v')``
    (seen against Tansu for an unknown user)."""
    for error in _chain(exc):
        name = type(error).__name__
        if "Sasl" in name or "Authentication" in name:
            return True
        if isinstance(error, KeyError) and error.args == ("v",):
            return True
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first (at most 10)."""
    chain = [exc]
    while len(chain) < 10 and (nxt := chain[-1].__cause__ or chain[-1].__context__):
        chain.append(nxt)
    return chain


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
