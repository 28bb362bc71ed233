"""ACME storage on Redis, shared by every instance of a fleet (``tls.acme.shared``).

Redis holds what must be one for all: the account key, each name's certificate and key,
its renewal state, the challenge answers being offered and a lock per name, so exactly
one process of all instances orders a given name while the others wait for its result,
and whichever instance the CA reaches answers the challenge. Keys (the account's, the
certificates', the TLS-ALPN-01 answers') are encrypted with AES-GCM under a key derived
from ``encryption_key``. Each instance keeps a copy of the certificates under
``tls.acme.storage``: its certificate store loads those files as before, and a copy
written from Redis is picked up at the store's next file check.

Keys under ``key_prefix`` (``gwacme:``)::

    account                 the account key (encrypted)
    cert:<name>, key:<name> the full chain, and its key (encrypted)
    state:<name>            failures, next attempt, last error, directory (JSON)
    http:<token>            an HTTP-01 key authorization (expires)
    alpn                    hash name -> TLS-ALPN-01 certificate and key (encrypted)
    lock:<name>             who orders the name (expires: a holder that died lets go)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.tls.storage import (
    TOKEN,
    CertificateInfo,
    LockBusy,
    RenewalState,
    Storage,
    state_from,
    state_json,
    write_atomic,
)

if TYPE_CHECKING:
    from gateway.config import Acme, AcmeShared

log = logging.getLogger("gateway.acme")

HTTP_ANSWER_TTL = 600  # seconds an HTTP-01 answer outlives an order that never withdrew it
_MAGIC = b"gw1"
# Deletes the lock only if it is still ours: one that expired and was taken by another
# process must not be released by the first holder's late exit.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


def storage_for(acme: Acme) -> Storage:
    """The files under ``acme.storage``; with ``acme.shared``, Redis behind them."""
    if acme.shared is None:
        return Storage(acme.storage)
    return SharedStorage(acme.storage, acme.shared, acme.order_timeout)


class SealedError(Exception):
    """A value on Redis sealed under another key."""


class SharedStorage(Storage):
    per_name = True

    def __init__(self, root: str, shared: AcmeShared, order_timeout: float) -> None:
        super().__init__(root)
        self._prefix = shared.key_prefix
        self._key = hashlib.sha256(shared.encryption_key.encode()).digest()
        # Longer than an order can take; a holder that died frees the name after it.
        self.lock_ttl = 2 * order_timeout + 30
        import redis  # only when configured

        self._redis = redis.Redis.from_url(
            shared.url,
            socket_timeout=shared.timeout,
            socket_connect_timeout=shared.timeout,
            **shared.client_options(),
        )

    def close(self) -> None:
        self._redis.close()

    # Encryption at rest.

    def _seal(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(12)
        return _MAGIC + nonce + AESGCM(self._key).encrypt(nonce, data, _MAGIC)

    def _open(self, sealed: bytes | None) -> bytes | None:
        """The value, or None when there is none. One this instance cannot open stops
        the check (raised): ordering anew would replace the fleet's key with one the other
        instances cannot open in turn."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if sealed is None:
            return None
        try:
            if not sealed.startswith(_MAGIC):
                raise InvalidTag
            return AESGCM(self._key).decrypt(sealed[3:15], sealed[15:], _MAGIC)
        except InvalidTag:
            raise SealedError(
                "a key on Redis that tls.acme.shared.encryption_key cannot open (every "
                "instance needs the same encryption_key)"
            ) from None

    def _get(self, key: str) -> bytes | None:
        value = self._redis.get(self._prefix + key)
        return value if isinstance(value, bytes) else None

    # The account.

    def read_account_key(self) -> bytes | None:
        return self._open(self._get("account"))

    def write_account_key(self, pem: bytes) -> None:
        # Two instances creating one at once: the first stays, both use it.
        self._redis.set(self._prefix + "account", self._seal(pem), nx=True)

    # Certificates: Redis is the truth, the files under ``root`` this instance's copy.

    def read_certificate(self, domain: str) -> CertificateInfo | None:
        chain, key = self._get(f"cert:{domain}"), self._open(self._get(f"key:{domain}"))
        if chain is None or key is None:
            return None
        pair = self.pair(domain)
        if _differs(pair.key, key) or _differs(pair.cert, chain):
            super().save_certificate(domain, chain, key)
        return super().read_certificate(domain)

    def save_certificate(self, domain: str, chain_pem: bytes, key_pem: bytes) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._prefix + f"key:{domain}", self._seal(key_pem))
        pipe.set(self._prefix + f"cert:{domain}", chain_pem)
        pipe.execute()
        super().save_certificate(domain, chain_pem, key_pem)

    def read_state(self, domain: str) -> RenewalState:
        raw = self._get(f"state:{domain}")
        return RenewalState() if raw is None else state_from(raw)

    def write_state(self, domain: str, state: RenewalState) -> None:
        self._redis.set(self._prefix + f"state:{domain}", state_json(state))

    # Challenge answers, offered by the ordering process to every instance.

    def offer_http(self, token: str, key_authorization: str) -> None:
        self._redis.set(self._prefix + f"http:{token}", key_authorization, ex=HTTP_ANSWER_TTL)

    def read_http(self, token: str) -> bytes | None:
        if not TOKEN.fullmatch(token):
            return None
        return self._get(f"http:{token}")

    def offer_alpn(self, domain: str, pem: bytes) -> None:
        self._redis.hset(self._prefix + "alpn", domain, self._seal(pem))
        super().offer_alpn(domain, pem)  # this instance at once

    def withdraw(self, path: str) -> None:
        name = os.path.basename(path)
        if os.path.dirname(path) == self.http_dir:
            self._redis.delete(self._prefix + f"http:{name}")
        elif os.path.dirname(path) == self.alpn_dir:
            self._redis.hdel(self._prefix + "alpn", name.removesuffix(".pem"))
        super().withdraw(path)

    def withdraw_all(self) -> None:
        """Nothing: HTTP-01 answers expire, and TLS-ALPN-01 answers are withdrawn by
        the order that offered them (or when its lock expires, below)."""

    def sync_challenges(self) -> None:
        offered = {
            (name.decode() if isinstance(name, bytes) else str(name)): self._open(
                sealed if isinstance(sealed, bytes) else None
            )
            for name, sealed in self._redis.hgetall(self._prefix + "alpn").items()
        }
        os.makedirs(self.alpn_dir, mode=0o700, exist_ok=True)
        for entry in os.listdir(self.alpn_dir):
            if entry.endswith(".pem") and entry[:-4] not in offered:
                super().withdraw(os.path.join(self.alpn_dir, entry))
        for name, pem in offered.items():
            path = os.path.join(self.alpn_dir, f"{name}.pem")
            if pem is not None and _differs(path, pem):
                write_atomic(path, pem, 0o600)

    @contextlib.contextmanager
    def lock(self, wait: bool, name: str = "") -> Iterator[None]:
        """The name's lock, for ``lock_ttl`` seconds at most. Never waits: a busy name is
        retried at the holder's next check (``wait`` is for one host's flock)."""
        key, token = self._prefix + f"lock:{name}", secrets.token_hex(16)
        if not self._redis.set(key, token, nx=True, px=int(self.lock_ttl * 1000)):
            raise LockBusy
        try:
            yield
        finally:
            self._redis.eval(_RELEASE, 1, key, token)


def _differs(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read() != data
    except FileNotFoundError:
        return True
