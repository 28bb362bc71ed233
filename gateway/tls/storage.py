"""Where ACME state lives on disk, shared by every worker (and every gateway on the
same storage): the account key, one certificate and key per domain, the renewal state,
the challenge answers being offered, and a lock so that one process orders at a time.

Layout under ``tls.acme.storage``::

    account.key                  account private key (PEM, 0600)
    lock                         flock(2) target
    <domain>/cert.pem, key.pem   the full chain and its key (key 0600)
    <domain>/state.json          failures, next attempt, last error, the directory used
    http-01/<token>              key authorizations offered for HTTP-01
    tls-alpn-01/<domain>.pem     challenge certificates offered for TLS-ALPN-01
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from gateway.config import TlsCertificate

if TYPE_CHECKING:
    from cryptography import x509

# RFC 8555 §8.3: tokens are base64url; anything else is not ours to look up.
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


class LockBusy(Exception):
    """Another process holds the ACME lock."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: int


@dataclass(frozen=True, slots=True)
class RenewalState:
    failures: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    directory: str = ""


def state_json(state: RenewalState) -> bytes:
    """A renewal state as stored (a file's or Redis's)."""
    return orjson.dumps(dataclasses.asdict(state))


def state_from(raw: bytes) -> RenewalState:
    """A stored renewal state; a missing field or a broken one reads as no failures."""
    try:
        fields = orjson.loads(raw)
        return RenewalState(
            int(fields["failures"]),
            float(fields["next_attempt"]),
            str(fields["last_error"]),
            str(fields["directory"]),
        )
    except (ValueError, KeyError, TypeError):
        return RenewalState()


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new file, never a
    part, and the new one survives a crash once this returns."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is masked by the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def certificate_info(pem: bytes) -> CertificateInfo:
    """The leaf (first) certificate of a PEM chain: its names and validity."""
    # cryptography (8 MiB) is imported by the functions that read certificates: a worker
    # without TLS keeps its challenge paths (Storage) and never loads it.
    from cryptography import x509

    return _info(x509.load_pem_x509_certificate(pem))


def _public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _info(cert: x509.Certificate) -> CertificateInfo:
    """Its DNS names (subjectAltName entries, else the CN) and validity."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        found = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        found = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    names = tuple(name.lower() for name in found)
    return CertificateInfo(
        names, cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number
    )


class Storage:
    """Paths and file operations; blocking, so callers run them off the event loop."""

    # One lock for every name (flock on one file); shared storage locks each name.
    per_name = False

    def __init__(self, root: str) -> None:
        self.root = root
        self.account_key = os.path.join(root, "account.key")
        self.http_dir = os.path.join(root, "http-01")
        self.alpn_dir = os.path.join(root, "tls-alpn-01")

    def close(self) -> None:
        """Nothing to let go of: files are opened per call."""

    def read_account_key(self) -> bytes | None:
        try:
            with open(self.account_key, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write_account_key(self, pem: bytes) -> None:
        # 0600: whoever holds it can revoke this gateway's certificates.
        write_atomic(self.account_key, pem, 0o600)

    def sync_challenges(self) -> None:
        """Bring the TLS-ALPN-01 answers offered elsewhere into ``alpn_dir`` (on one
        host's files they are there already)."""

    def pair(self, domain: str) -> TlsCertificate:
        base = os.path.join(self.root, domain)
        return TlsCertificate(
            cert=os.path.join(base, "cert.pem"), key=os.path.join(base, "key.pem")
        )

    def read_certificate(self, domain: str) -> CertificateInfo | None:
        """The stored certificate, or None when it is missing, unreadable, or not the
        pair of the stored key (a crash between the two writes): then a new one is due."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        pair = self.pair(domain)
        try:
            with open(pair.cert, "rb") as handle:
                cert = x509.load_pem_x509_certificate(handle.read())
            with open(pair.key, "rb") as handle:
                key = serialization.load_pem_private_key(handle.read(), password=None)
        except (OSError, ValueError, TypeError):
            return None
        if _public(cert.public_key()) != _public(key.public_key()):
            return None
        return _info(cert)

    def save_certificate(self, domain: str, chain_pem: bytes, key_pem: bytes) -> None:
        # Key first: a reader seeing the new chain with the old key fails to load the
        # pair and keeps serving what it has until the next check finds both new.
        pair = self.pair(domain)
        write_atomic(pair.key, key_pem, 0o600)
        write_atomic(pair.cert, chain_pem)

    def read_state(self, domain: str) -> RenewalState:
        try:
            with open(os.path.join(self.root, domain, "state.json"), "rb") as handle:
                return state_from(handle.read())
        except OSError:
            return RenewalState()

    def write_state(self, domain: str, state: RenewalState) -> None:
        write_atomic(os.path.join(self.root, domain, "state.json"), state_json(state))

    # Challenge answers: written by the process ordering, read by whichever worker the
    # CA's validation request reaches.

    def offer_http(self, token: str, key_authorization: str) -> None:
        write_atomic(os.path.join(self.http_dir, token), key_authorization.encode())

    def read_http(self, token: str) -> bytes | None:
        if not TOKEN.fullmatch(token):
            return None
        try:
            with open(os.path.join(self.http_dir, token), "rb") as handle:
                return handle.read()
        except OSError:
            return None

    def offer_alpn(self, domain: str, pem: bytes) -> None:
        write_atomic(os.path.join(self.alpn_dir, f"{domain}.pem"), pem, 0o600)

    def withdraw(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def withdraw_all(self) -> None:
        for directory in (self.http_dir, self.alpn_dir):
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(directory):
                    self.withdraw(os.path.join(directory, name))

    @contextlib.contextmanager
    def lock(self, wait: bool, name: str = "") -> Iterator[None]:
        """Hold the ACME lock: one process orders at a time. Without ``wait``, raise
        :class:`LockBusy` when another holds it. (``name``: see ``per_name``.)"""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockBusy from None
            yield
        finally:
            os.close(fd)  # closing releases the lock
