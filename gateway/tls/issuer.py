"""Obtaining one certificate over ACME (RFC 8555) with certbot's ``acme`` library.

The library is synchronous (requests): everything here blocks and runs in a thread.
Challenge answers are published through :class:`Storage` so that whichever worker the
CA's validation request reaches can answer it.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier
from josepy.jwa import ES256
from josepy.jwk import JWK

from gateway import __version__
from gateway.config import Acme
from gateway.tls.storage import Storage

if TYPE_CHECKING:
    from gateway.tls.dns01 import DnsUpdater

log = logging.getLogger("gateway.acme")

# RFC 8737 §3: the acmeIdentifier extension of a TLS-ALPN-01 validation certificate.
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
ACME_TLS_ALPN = "acme-tls/1"
# Other workers poll the challenge directory (see ChallengeBoard): give them time to
# load a TLS-ALPN-01 certificate before the CA is told to connect.
PROPAGATION_DELAY = 1.0


class IssueError(Exception):
    """An order that cannot succeed as configured (no usable challenge, say)."""


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """ACME tls-alpn-01 challenge response (the POSTed body is ``{}``)."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """ACME tls-alpn-01 challenge (RFC 8737); the acme library dropped its own."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: JWK, **kwargs: Any) -> str:
        return self.key_authorization(account_key)


def new_private_key(key_type: str) -> bytes:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "rsa2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def self_signed(
    domain: str,
    lifetime: datetime.timedelta,
    extensions: tuple[x509.Extension[x509.ExtensionType], ...] = (),
) -> bytes:
    """A fresh key and a self-signed certificate for ``domain``, as one PEM (key first)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
    )
    for extension in extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def alpn_certificate(domain: str, key_authorization: str) -> bytes:
    """The TLS-ALPN-01 validation certificate (RFC 8737 §3): the SHA-256 of the key
    authorization in a critical acmeIdentifier extension, as a DER OCTET STRING."""
    digest = hashlib.sha256(key_authorization.encode()).digest()
    der = b"\x04" + bytes([len(digest)]) + digest  # OCTET STRING, 32-byte length
    extension = x509.Extension(
        ACME_IDENTIFIER, True, x509.UnrecognizedExtension(ACME_IDENTIFIER, der)
    )
    return self_signed(domain, datetime.timedelta(days=1), (extension,))


def describe(exc: BaseException) -> str:
    """One line for logs, metrics' neighbours and the ready detail."""
    if isinstance(exc, errors.ValidationError):
        problems = [
            f"{authz.body.identifier.value}: {challb.chall.typ} {challb.error}"
            for authz in exc.failed_authzrs
            for challb in authz.body.challenges
            if challb.error is not None
        ]
        return "challenge failed: " + ("; ".join(problems) or "no detail")
    if isinstance(exc, messages.Error):
        return f"CA refused: {exc.typ} {exc.detail or ''}".strip()
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class AcmeIssuer:
    """Orders certificates from one ACME directory with one account."""

    def __init__(self, acme: Acme, storage: Storage) -> None:
        self._acme = acme
        self._storage = storage
        self._updater: DnsUpdater | None = None

    def _dns(self) -> DnsUpdater:
        from gateway.tls.dns01 import DnsUpdater  # dnspython, only when configured

        assert self._acme.dns is not None  # checked with the config
        if self._updater is None:
            self._updater = DnsUpdater(self._acme.dns)
        return self._updater

    def _account_key(self) -> JWK:
        stored = self._storage.read_account_key()
        if stored is not None:
            return JWK.load(stored)
        pem = new_private_key("ec256")  # created once
        self._storage.write_account_key(pem)
        log.info("ACME account key created at %s", self._storage.account_key)
        return JWK.load(pem)

    def _network(self) -> client.ClientNetwork:
        acme = self._acme
        return client.ClientNetwork(
            self._account_key(),
            alg=ES256,
            # requests takes a CA bundle path where the library's annotation says bool.
            verify_ssl=cast(bool, acme.ca_bundle or True),
            user_agent=f"edge-gateway/{__version__} acme-python",
            timeout=30,
        )

    def _client(self, net: client.ClientNetwork) -> client.ClientV2:
        acme = self._acme
        key = net.key
        assert key is not None
        directory = client.ClientV2.get_directory(acme.directory, net)
        acme_client = client.ClientV2(directory, net)
        eab = None
        if acme.eab is not None:
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=key.public_key(),
                kid=acme.eab.kid,
                hmac_key=acme.eab.hmac_key,
                directory=directory,
            )
        registration = messages.NewRegistration.from_data(
            email=acme.email,
            terms_of_service_agreed=acme.agree_to_terms,
            external_account_binding=eab,
        )
        try:
            net.account = acme_client.new_account(registration)
        except errors.ConflictError as exc:  # the key is already registered: use that account
            net.account = acme_client.query_registration(
                messages.RegistrationResource(uri=exc.location, body=messages.Registration())
            )
        return acme_client

    def issue(self, domain: str) -> tuple[bytes, bytes]:
        """Order a certificate for ``domain``: (full chain PEM, private key PEM)."""
        net = self._network()
        try:
            return self._issue(self._client(net), domain)
        finally:
            net.session.close()  # its pooled connection to the CA, not left to the GC

    def _issue(self, acme_client: client.ClientV2, domain: str) -> tuple[bytes, bytes]:
        acme = self._acme
        key_pem = new_private_key(acme.key_type)
        order = acme_client.new_order(crypto_util.make_csr(key_pem, [domain]))
        published: list[str] = []
        records: list[tuple[str, str]] = []  # dns-01: (name, value) put in the zone
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the CA reused an earlier validation
                challb = next(
                    (c for c in authz.body.challenges if c.chall.typ == acme.challenge), None
                )
                if challb is None:
                    offered = ", ".join(c.chall.typ for c in authz.body.challenges)
                    raise IssueError(f"the CA offers no {acme.challenge} for {domain} ({offered})")
                chall = cast(challenges.KeyAuthorizationChallenge, challb.chall)
                response, validation = chall.response_and_validation(acme_client.net.key)
                if acme.challenge == "http-01":
                    token = chall.encode("token")
                    self._storage.offer_http(token, validation)
                    published.append(f"{self._storage.http_dir}/{token}")
                elif acme.challenge == "dns-01":
                    # A wildcard's identifier is its base name: one record serves both.
                    name = f"_acme-challenge.{authz.body.identifier.value}"
                    self._dns().add(name, validation)
                    records.append((name, validation))
                    self._dns().wait_visible(name, validation)
                else:
                    self._storage.offer_alpn(domain, alpn_certificate(domain, validation))
                    published.append(f"{self._storage.alpn_dir}/{domain}.pem")
                    time.sleep(PROPAGATION_DELAY)
                acme_client.answer_challenge(challb, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=acme.order_timeout)
            order = acme_client.poll_authorizations(order, deadline)
        finally:
            # Validated (or failed): stop offering the answers before finalizing, so a
            # TLS-ALPN-01 certificate is not served a moment longer than needed.
            for path in published:
                self._storage.withdraw(path)
            for name, value in records:
                try:
                    self._dns().remove(name, value)
                except Exception as exc:  # the order's outcome matters more than a stale TXT
                    log.warning("the DNS-01 record at %s stays: %s", name, describe(exc))
        order = acme_client.finalize_order(order, deadline)
        if not order.fullchain_pem:
            raise IssueError(f"the CA finalized the order for {domain} without a certificate")
        return order.fullchain_pem.encode(), key_pem
