"""TLS termination: certificates from files, chosen by SNI, replaced without a restart.

Each certificate gets its own SSLContext; one listening context picks among them in the
SNI callback (exact name, then a one-label wildcard, then the default). A certificate
file replaced on disk is loaded by the next check and used for new handshakes; open
connections keep the one they have.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.config import Tls, TlsCertificate

log = logging.getLogger("gateway.tls")

ALPN = ["http/1.1"]
# TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 suites are fixed by OpenSSL.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class CertificateError(Exception):
    """A certificate or key file cannot be used; ``str()`` says which and why."""


def names_of(cert_path: str) -> list[str]:
    """The DNS names a certificate is for: its subjectAltName entries, else its CN."""
    try:
        with open(cert_path, "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ValueError) as exc:
        raise CertificateError(f"{cert_path}: not a readable PEM certificate ({exc})") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [name.lower() for name in names]


def context_for(pair: TlsCertificate, tls: Tls) -> ssl.SSLContext:
    """A server context holding one certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.set_ciphers(CIPHERS)
    context.set_alpn_protocols(ALPN)
    try:
        context.load_cert_chain(pair.cert, pair.key)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"{pair.cert} / {pair.key}: {exc}") from None
    return context


@dataclass
class _Loaded:
    pair: TlsCertificate
    context: ssl.SSLContext
    names: list[str]
    stamp: tuple[float, float]


def _stamp(pair: TlsCertificate) -> tuple[float, float]:
    return (os.stat(pair.cert).st_mtime, os.stat(pair.key).st_mtime)


class CertificateStore:
    """The certificates of a worker and the listening context that chooses among them."""

    def __init__(self, tls: Tls) -> None:
        self._tls = tls
        self._loaded = [self._load(pair) for pair in tls.certificates]
        self._by_name: dict[str, ssl.SSLContext] = {}
        self._index()
        # The listening context only dispatches: every handshake is moved to the chosen
        # certificate's context in the SNI callback (also when the client sends no SNI).
        self.context = context_for(tls.certificates[0], tls)
        self.context.sni_callback = self._choose

    def _load(self, pair: TlsCertificate) -> _Loaded:
        return _Loaded(pair, context_for(pair, self._tls), names_of(pair.cert), _stamp(pair))

    def _index(self) -> None:
        by_name: dict[str, ssl.SSLContext] = {}
        for loaded in reversed(self._loaded):  # earlier certificates win a shared name
            for name in loaded.names:
                by_name[name] = loaded.context
        self._by_name = by_name

    def _choose(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        # Unknown names, and clients without SNI, get the default (first) certificate.
        chosen = None
        if server_name:
            name = server_name.lower()
            chosen = self._by_name.get(name)
            if chosen is None and "." in name:
                chosen = self._by_name.get("*." + name.split(".", 1)[1])
        sock.context = chosen or self._loaded[0].context

    def changed(self) -> list[tuple[int, _Loaded]]:
        """Certificates whose files changed, loaded afresh (blocking: run off the loop).
        A broken replacement is logged and skipped: the current certificate stays."""
        fresh = []
        for i, loaded in enumerate(self._loaded):
            try:
                if _stamp(loaded.pair) != loaded.stamp:
                    fresh.append((i, self._load(loaded.pair)))
            except (OSError, CertificateError) as exc:
                log.error(
                    "certificate %s not reloaded, keeping the current one: %s",
                    loaded.pair.cert,
                    exc,
                )
        return fresh

    def swap(self, fresh: list[tuple[int, _Loaded]]) -> None:
        """Use the fresh certificates for new handshakes (on the loop: the SNI callback
        reads these without locks)."""
        for i, loaded in fresh:
            self._loaded[i] = loaded
            log.info("certificate %s reloaded", loaded.pair.cert)
        if fresh:
            self._index()

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tls.reload_interval)
            self.swap(await loop.run_in_executor(None, self.changed))
