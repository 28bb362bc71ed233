"""``tls``: certificate files, ACME, HSTS."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from gateway.config.base import (
    ConfigIssue,
    RedisServer,
    _Model,
)
from gateway.config.paths import (
    ca_file_issue,
    certificate_pair_issue,
)

if TYPE_CHECKING:
    from gateway.config.root import Config


class TlsCertificate(_Model):
    """A PEM certificate chain and its private key."""

    cert: str
    key: str


_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


def _check_domains(value: tuple[str, ...]) -> tuple[str, ...]:
    for i, name in enumerate(value):
        base = name.removeprefix("*.")  # a wildcard: one label, needs dns-01 (checks)
        if not _DNS_NAME.match(base) or "." not in base:
            raise ValueError(f"[{i}] {name!r} is not a lowercase DNS name with a dot")
    if len(set(value)) != len(value):
        raise ValueError("names must not repeat")
    return value


class AcmeEab(_Model):
    """External account binding (RFC 8555 §7.3.4), from the CA's account page."""

    kid: Annotated[str, Field(min_length=1)]
    hmac_key: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+=*$")]


class AcmeShared(RedisServer):
    """Storage on Redis shared by every instance: the account, certificates and keys
    (encrypted with ``encryption_key``), renewal state, challenge answers and a lock per
    name. ``storage`` stays the local copy each instance serves from."""

    key_prefix: str = "gwacme:"
    encryption_key: Annotated[str, Field(min_length=16)]
    timeout: Annotated[float, Field(gt=0, le=60)] = 5.0


class AcmeDnsTsig(_Model):
    """The TSIG key (RFC 8945) the DNS server accepts updates signed with."""

    name: Annotated[str, Field(min_length=1)]
    algorithm: Literal["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224"] = "hmac-sha256"
    secret: Annotated[str, Field(min_length=16)]  # base64, as BIND and Knot write it

    @field_validator("secret")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError("must be base64 (as tsig-keygen or keymgr -t print it)") from None
        return value


class AcmeDns(_Model):
    """DNS-01: the TXT records go in through RFC 2136 updates to ``server``."""

    server: Annotated[str, Field(pattern=r"^[0-9A-Za-z.:\[\]-]+$")]  # host[:port], port 53
    zone: Annotated[str, Field(min_length=1)]
    tsig: AcmeDnsTsig
    check_servers: tuple[str, ...] = ()  # where the record must be visible: default server
    ttl: Annotated[int, Field(ge=1, le=86400)] = 60
    propagation_timeout: Annotated[float, Field(gt=0, le=3600)] = 120.0


class AcmeOnDemand(_Model):
    """Certificates for names not in ``domains``, ordered when a handshake first asks for
    one and ``ask`` allows it (Caddy's on-demand TLS)."""

    ask: Annotated[str, Field(pattern=r"^https?://")]  # GET ask?domain=NAME: 200 allows
    per_minute: Annotated[int, Field(ge=1, le=10_000)] = 10  # orders a worker starts
    max_certificates: Annotated[int, Field(ge=1, le=100_000)] = 1000  # per worker
    refused_for: Annotated[float, Field(ge=0, le=86400)] = 600.0  # a no is remembered
    ask_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0


class Acme(_Model):
    """Certificates obtained and renewed over ACME (RFC 8555), one per domain name."""

    directory: Annotated[str, Field(pattern=r"^https?://")] = (
        "https://acme-v02.api.letsencrypt.org/directory"
    )
    domains: Annotated[tuple[str, ...], Field(min_length=1), AfterValidator(_check_domains)]
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    agree_to_terms: bool = False
    challenge: Literal["http-01", "tls-alpn-01", "dns-01"] = "http-01"
    dns: AcmeDns | None = None
    on_demand: AcmeOnDemand | None = None
    storage: str = "certs/acme"
    shared: AcmeShared | None = None
    ca_bundle: str | None = None
    eab: AcmeEab | None = None
    key_type: Literal["ec256", "rsa2048"] = "ec256"
    renew_remaining: Annotated[float, Field(gt=0, lt=1)] = 1 / 3
    check_interval: Annotated[float, Field(gt=0, le=86400)] = 3600.0
    retry_min: Annotated[float, Field(gt=0)] = 60.0
    retry_max: Annotated[float, Field(gt=0)] = 6 * 3600.0
    order_timeout: Annotated[float, Field(gt=0, le=3600)] = 90.0


class Hsts(_Model):
    """Strict-Transport-Security (RFC 6797) on HTTPS answers for these hosts."""

    hosts: Annotated[tuple[str, ...], Field(min_length=1)]
    max_age: Annotated[int, Field(ge=0)] = 31536000
    include_subdomains: bool = False
    preload: bool = False

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, host in enumerate(value):
            if not _DNS_NAME.match(host.removeprefix("*.")):
                raise ValueError(f"[{i}] {host!r} is not a lowercase host name or *.domain")
        return value

    @model_validator(mode="after")
    def _preload(self) -> Hsts:
        # hstspreload.org's submission rules: browsers would ignore the request otherwise.
        if self.preload and (not self.include_subdomains or self.max_age < 31536000):
            raise ValueError("preload needs include_subdomains and max_age >= 31536000")
        return self

    @property
    def header(self) -> str:
        value = f"max-age={self.max_age}"
        if self.include_subdomains:
            value += "; includeSubDomains"
        if self.preload:
            value += "; preload"
        return value


class Tls(_Model):
    """Certificates for the ``tls`` listeners: from files (the first is the default) and
    over ACME."""

    certificates: tuple[TlsCertificate, ...] = ()
    acme: Acme | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    reload_interval: Annotated[float, Field(gt=0, le=86400)] = 5.0
    hsts: tuple[Hsts, ...] = ()
    # Offer h2 before http/1.1 in ALPN on TLS listeners. One setting for all of them: ALPN
    # is answered from the certificate's context, which every TLS listener shares.
    http2: bool = True


def checks(config: Config) -> Iterator[ConfigIssue]:
    """Certificates that load, ACME settings that can work with the listeners."""
    if config.tls is not None:
        acme = config.tls.acme
        if not config.tls.certificates and acme is None:
            yield ConfigIssue("tls", "needs certificates, or acme to obtain them")
        if acme is not None:
            if not acme.agree_to_terms:
                yield ConfigIssue(
                    "tls.acme.agree_to_terms", "must be true: the CA's terms of service apply"
                )
            if acme.retry_max < acme.retry_min:
                yield ConfigIssue("tls.acme.retry_max", "must be at least retry_min")
            shared = acme.shared
            if shared is not None and shared.ca_file and (problem := ca_file_issue(shared.ca_file)):
                yield ConfigIssue("tls.acme.shared.ca_file", problem)
            if acme.ca_bundle is not None and not os.path.isfile(acme.ca_bundle):
                yield ConfigIssue("tls.acme.ca_bundle", f"{acme.ca_bundle}: no such file")
            yield from _dns_checks(acme)
            plain = [lst for lst in config.server.listeners if not lst.tls]
            secure = [lst for lst in config.server.listeners if lst.tls]
            if acme.challenge == "http-01" and not plain:
                yield ConfigIssue(
                    "tls.acme.challenge",
                    "http-01 needs a plain-HTTP listener (on port 80 for a public CA)",
                )
            if acme.challenge == "tls-alpn-01" and not secure:
                yield ConfigIssue(
                    "tls.acme.challenge",
                    "tls-alpn-01 needs a tls listener (on port 443 for a public CA)",
                )

        for i, pair in enumerate(config.tls.certificates):
            if problem := certificate_pair_issue(pair.cert, pair.key):
                yield ConfigIssue(f"tls.certificates[{i}]", problem)


def _dns_checks(acme: Acme) -> Iterator[ConfigIssue]:
    """DNS-01 has its server; wildcards have DNS-01; every name is in the zone."""
    if acme.challenge == "dns-01" and acme.dns is None:
        yield ConfigIssue("tls.acme.dns", "dns-01 needs the DNS server that takes the updates")
    if acme.challenge != "dns-01" and acme.dns is not None:
        yield ConfigIssue("tls.acme.dns", 'only used with "challenge": "dns-01"')
    if acme.on_demand is not None and acme.challenge == "dns-01":
        yield ConfigIssue("tls.acme.on_demand", "needs http-01 or tls-alpn-01: any name may come")
    zone = acme.dns.zone.lower().rstrip(".") if acme.dns is not None else None
    for i, name in enumerate(acme.domains):
        if name.startswith("*.") and acme.challenge != "dns-01":
            yield ConfigIssue(f"tls.acme.domains[{i}]", "a wildcard name needs dns-01")
        base = name.removeprefix("*.")
        if zone is not None and base != zone and not base.endswith("." + zone):
            yield ConfigIssue(f"tls.acme.domains[{i}]", f"{name!r} is not in {zone}")
