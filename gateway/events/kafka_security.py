"""How the gateway's Kafka clients reach a secured cluster, and what to say when they
cannot: one place turns ``kafka.tls`` and ``kafka.sasl`` into aiokafka's options (the
event producer, replay and the link store's clients all take them) and an aiokafka
failure into a reason an operator can act on.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from dataclasses import dataclass
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context

from gateway.config import Kafka


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
    """The client TLS context of ``kafka.tls``, or None without TLS."""
    tls = config.tls_settings
    if tls is None:
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=tls.ca_file,
        certfile=tls.cert_file,
        keyfile=tls.key_file,
        password=tls.key_password,
    )
    context.check_hostname = tls.check_hostname
    return context


def client_options(config: Kafka) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(config.bootstrap_servers),
        "security_protocol": config.security_protocol,
    }
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
    """:func:`describe_failure`, and where aiokafka only says it could not bootstrap
    (it logs a TLS verification failure but raises a connection error), a TLS handshake
    of our own with the first bootstrap server to name what failed."""
    failure = describe_failure(exc, config)
    context = ssl_context_for(config)
    if failure.reason != "unreachable" or context is None:
        return failure
    host, _, port = config.bootstrap_servers[0].rpartition(":")
    host = host.strip("[]")
    try:
        async with asyncio.timeout(config.ack_timeout):
            _, writer = await asyncio.open_connection(
                host, int(port), ssl=context, server_hostname=host
            )
        writer.close()
    except (ssl.SSLError, OSError, TimeoutError) as probe:
        if isinstance(probe, ssl.SSLError):
            return describe_failure(probe, config)
    return failure


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
