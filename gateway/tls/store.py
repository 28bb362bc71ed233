"""TLS termination: certificates from files, chosen by SNI, replaced without a restart.

Each certificate gets its own SSLContext; one listening context picks among them in the
SNI callback (exact name, then a one-label wildcard, then the default). A certificate
file replaced on disk is loaded by the next check and used for new handshakes; open
connections keep the one they have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.config import Tls, TlsCertificate
from gateway.tls.issuer import ACME_TLS_ALPN, self_signed
from gateway.tls.storage import CertificateInfo, Storage, certificate_info

log = logging.getLogger("gateway.tls.store")

# Offered in this order (RFC 7301): h2 first, as Caddy and nginx do, unless tls.http2 is off.
H2_ALPN = ["h2", "http/1.1"]
H1_ALPN = ["http/1.1"]


def alpn(tls: Tls) -> list[str]:
    return H2_ALPN if tls.http2 else H1_ALPN


# TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 suites are fixed by OpenSSL.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
CHALLENGE_POLL = 0.25


class CertificateError(Exception):
    """A certificate or key file cannot be used; ``str()`` says which and why."""


def read_certificate(cert_path: str) -> CertificateInfo:
    """The DNS names (subjectAltName entries, else the CN) and validity of a file's
    leaf certificate."""
    try:
        with open(cert_path, "rb") as handle:
            return certificate_info(handle.read())
    except (OSError, ValueError) as exc:
        raise CertificateError(f"{cert_path}: not a readable PEM certificate ({exc})") from None


def names_of(cert_path: str) -> list[str]:
    """The DNS names a certificate is for: its subjectAltName entries, else its CN."""
    return list(read_certificate(cert_path).names)


def context_for(pair: TlsCertificate | None, tls: Tls) -> ssl.SSLContext:
    """A server context holding one certificate chain and key (none yet without a pair)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.set_ciphers(CIPHERS)
    context.set_alpn_protocols(alpn(tls))
    if pair is None:
        return context
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
    # None: an ACME certificate not issued yet, served by a self-signed placeholder.
    stamp: tuple[float, float] | None
    not_after: datetime | None
    managed: bool  # ACME's: serves its domain, whatever names the file lists


def _stamp(pair: TlsCertificate) -> tuple[float, float]:
    return (os.stat(pair.cert).st_mtime, os.stat(pair.key).st_mtime)


def _context_from_pem(pem: bytes, tls: Tls, alpn: list[str]) -> ssl.SSLContext:
    """A context for a key and certificate held in memory (ssl loads only from files)."""
    context = context_for(None, tls)
    context.set_alpn_protocols(alpn)
    with tempfile.NamedTemporaryFile(prefix="gateway-tls-", suffix=".pem") as handle:
        handle.write(pem)
        handle.flush()
        context.load_cert_chain(handle.name)
    return context


class CertificateStore:
    """The certificates of a worker and the listening context that chooses among them:
    files from ``tls.certificates``, then one per ``tls.acme`` domain (a self-signed
    placeholder until the first is issued), and TLS-ALPN-01 validation certificates
    while an order is being validated."""

    def __init__(self, tls: Tls, storage: Storage | None = None) -> None:
        self._tls = tls
        self._loaded = [self._load(pair) for pair in tls.certificates]
        self._storage = storage  # tls.acme's; None without it
        if tls.acme is not None:
            assert storage is not None, "tls.acme needs its storage"
            self._loaded.extend(self._load_managed(domain) for domain in tls.acme.domains)
        self._by_name: dict[str, ssl.SSLContext] = {}
        self._index()
        # Called (on the loop) with a valid SNI name no certificate serves: on demand.
        self.on_unknown: Callable[[str], None] | None = None
        # TLS-ALPN-01 (RFC 8737): while offered, the CA's handshake for a name gets the
        # validation certificate. The ssl module does not show the client's ALPN offer
        # at SNI time, so other clients of that name get it too for those few seconds.
        self._challenges: dict[str, ssl.SSLContext] = {}
        self._challenge_stamp = -1.0
        self._challenge_lock = asyncio.Lock()
        # The listening context only dispatches: every handshake is moved to the chosen
        # certificate's context in the SNI callback (also when the client sends no SNI).
        self.context = context_for(None, tls)
        self.context.set_alpn_protocols([*alpn(tls), ACME_TLS_ALPN])
        self.context.sni_callback = self._choose

    def _load(self, pair: TlsCertificate, domain: str | None = None) -> _Loaded:
        """The pair's context; with ``domain``, an ACME certificate serving that name."""
        stamp = _stamp(pair)
        info = read_certificate(pair.cert)
        names = [domain] if domain is not None else list(info.names)
        context = context_for(pair, self._tls)
        return _Loaded(pair, context, names, stamp, info.not_after, managed=domain is not None)

    def _load_managed(self, domain: str) -> _Loaded:
        assert self._storage is not None
        pair = self._storage.pair(domain)
        try:
            return self._load(pair, domain)
        except FileNotFoundError:
            log.warning(
                "no certificate for %s yet: serving a self-signed placeholder until ACME "
                "issues one",
                domain,
            )
        except (OSError, CertificateError) as exc:
            log.error("certificate for %s unusable (%s): serving a placeholder", domain, exc)
        placeholder = _context_from_pem(
            self_signed(domain, timedelta(days=7)), self._tls, alpn(self._tls)
        )
        return _Loaded(pair, placeholder, [domain], None, None, managed=True)

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
            name = server_name.lower().rstrip(".")
            if self._challenges:
                chosen = self._challenges.get(name)
            if chosen is None:
                chosen = self._by_name.get(name)
            if chosen is None and "." in name:
                chosen = self._by_name.get("*." + name.split(".", 1)[1])
            if chosen is None and self.on_unknown is not None:
                self.on_unknown(name)  # this handshake gets the default; a later one, it
        sock.context = chosen or self._loaded[0].context

    def serves(self, name: str) -> bool:
        return name in self._by_name

    def load_managed(self, domain: str) -> _Loaded:
        """An ACME certificate for a name not in the config (blocking: off the loop)."""
        return self._load_managed(domain)

    def adopt(self, loaded: _Loaded) -> None:
        """Serve ``loaded`` for new handshakes, and follow its files (on the loop)."""
        self._loaded.append(loaded)
        self._index()

    def expiries(self) -> list[tuple[str, datetime | None]]:
        """Each certificate's first name and expiry (None: a placeholder)."""
        return [(loaded.names[0], loaded.not_after) for loaded in self._loaded if loaded.names]

    def changed(self) -> list[tuple[int, _Loaded]]:
        """Certificates whose files changed, loaded afresh (blocking: run off the loop).
        A broken replacement is logged and skipped: the current certificate stays."""
        fresh = []
        for i, loaded in enumerate(self._loaded):
            pair = loaded.pair
            try:
                if loaded.stamp is None:  # placeholder: has the first one been issued?
                    if not (os.path.exists(pair.cert) and os.path.exists(pair.key)):
                        continue
                elif _stamp(pair) == loaded.stamp:
                    continue
                domain = loaded.names[0] if loaded.managed else None
                fresh.append((i, self._load(pair, domain)))
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
            log.info("certificate %s loaded", loaded.pair.cert)
        if fresh:
            self._index()

    async def refresh(self) -> bool:
        """Load changed files now; True when something changed."""
        fresh = await asyncio.get_running_loop().run_in_executor(None, self.changed)
        self.swap(fresh)
        return bool(fresh)

    async def watch(self, on_change: Callable[[], None] = lambda: None) -> None:
        while True:
            await asyncio.sleep(self._tls.reload_interval)
            if await self.refresh():
                on_change()

    def _challenge_contexts(self, seen: float) -> tuple[float, dict[str, ssl.SSLContext] | None]:
        """(the directory's mtime, its validation certificates), or None for the second
        when the mtime is still ``seen`` (blocking: a stat, and reads when it changed)."""
        assert self._storage is not None
        self._storage.sync_challenges()  # offered by another instance: into the folder
        directory = self._storage.alpn_dir
        try:
            stamp = os.stat(directory).st_mtime_ns / 1e9
        except FileNotFoundError:
            stamp = 0.0
        if stamp == seen:
            return stamp, None
        contexts = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(directory):
                if not entry.endswith(".pem"):
                    continue
                try:
                    with open(os.path.join(directory, entry), "rb") as handle:
                        pem = handle.read()
                    contexts[entry[:-4]] = _context_from_pem(pem, self._tls, [ACME_TLS_ALPN])
                except (OSError, ssl.SSLError) as exc:  # half-withdrawn: gone next look
                    log.debug("challenge certificate %s skipped: %s", entry, exc)
        return stamp, contexts

    @property
    def challenges(self) -> list[str]:
        """Names for which a TLS-ALPN-01 validation certificate is being offered."""
        return list(self._challenges)

    async def refresh_challenges(self) -> None:
        """Load the TLS-ALPN-01 validation certificates if their directory changed (the
        stat too runs off the loop: the storage may be a network file system)."""
        async with self._challenge_lock:  # the watcher and a finished order, one at a time
            loop = asyncio.get_running_loop()
            stamp, contexts = await loop.run_in_executor(
                None, self._challenge_contexts, self._challenge_stamp
            )
            if contexts is not None:
                self._challenge_stamp, self._challenges = stamp, contexts

    async def watch_challenges(self, interval: float = CHALLENGE_POLL) -> None:
        """Follow the validation certificates that the ordering process publishes (a
        stat of one directory per ``interval``)."""
        while True:
            await self.refresh_challenges()
            await asyncio.sleep(interval)
