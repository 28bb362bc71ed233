"""Keeping ACME certificates current: when each is due, retrying with backoff, and the
worker task that orders (one process at a time, through the storage lock).

Every worker runs a :class:`Renewer`. Whichever takes the lock orders what is due and
writes the files; every worker's :class:`~gateway.tls.store.CertificateStore` then loads them
(the one that ordered at once, the others at their next file check).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import Acme
from gateway.observability.metrics import Metrics
from gateway.tls.issuer import AcmeIssuer, describe
from gateway.tls.storage import CertificateInfo, LockBusy, RenewalState, Storage

log = logging.getLogger("gateway.acme")

# Spread renewals of certificates issued together over this share of their lifetime.
JITTER_SHARE = 0.02
MIN_WAKE = 1.0


def renew_at(info: CertificateInfo, remaining: float) -> float:
    """Unix time from which a certificate is due: when ``remaining`` of its lifetime is
    left, less a jitter taken from its serial number, so that every worker and instance
    agrees on the moment while certificates issued together spread out."""
    start, end = info.not_before.timestamp(), info.not_after.timestamp()
    lifetime = end - start
    jitter = (info.serial % 997) / 997 * JITTER_SHARE * lifetime
    return end - lifetime * remaining - jitter


def backoff(failures: int, retry_min: float, retry_max: float, rand: float) -> float:
    """Seconds before the next attempt after ``failures`` failures in a row: doubling
    from ``retry_min`` up to ``retry_max``, +-10% so that instances do not retry in step."""
    base = min(retry_max, retry_min * 2.0 ** min(failures - 1, 40))
    return base * (0.9 + 0.2 * rand)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one check did for one domain: issued, current, waiting, failed or busy."""

    domain: str
    status: str
    detail: str = ""


class Renewer:
    """Orders and renews the certificates of ``tls.acme`` for one worker."""

    def __init__(
        self,
        acme: Acme,
        storage: Storage,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._acme = acme
        self._storage = storage
        self._issuer = AcmeIssuer(acme, storage)
        self._metrics = metrics
        self._clock = clock
        self._random = random.Random()
        self.on_demand: list[str] = []  # names ordered on demand, renewed as the others

    @property
    def domains(self) -> list[str]:
        return [*self._acme.domains, *self.on_demand]

    def check(self, force: bool = False, only: str | None = None) -> tuple[list[Outcome], float]:
        """Order what is due (everything with ``force``; ``only`` one name); blocking.
        Returns the outcomes and the seconds until the next check."""
        domains = [d for d in self.domains if only is None or d == only]
        if self._storage.per_name:
            # Shared storage: a lock per name, so instances order different names at once.
            return [self._locked(domain, force) for domain in domains], self._next_wake()
        try:
            # Never waits: a forced renewal while another process orders is refused, not
            # queued behind it.
            with self._storage.lock(wait=False):
                if not force:
                    self._storage.withdraw_all()  # answers left by a process that died
                outcomes = [self._renew(domain, force) for domain in domains]
        except LockBusy:
            outcomes = [Outcome(d, "busy", "another process holds the lock") for d in domains]
        return outcomes, self._next_wake()

    def _locked(self, domain: str, force: bool) -> Outcome:
        try:
            with self._storage.lock(wait=False, name=domain):
                return self._renew(domain, force)
        except LockBusy:
            return Outcome(domain, "busy", "another process is ordering it")

    def _renew(self, domain: str, force: bool) -> Outcome:
        now = self._clock()
        info = self._storage.read_certificate(domain)
        state = self._storage.read_state(domain)
        if not force:
            fresh = info is not None and state.directory in ("", self._acme.directory)
            # A failed order, due or forced, is retried until it succeeds (issue 27, D6: a
            # forced renewal that failed was forgotten until the certificate fell due).
            current = fresh and info is not None and not state.failures
            if current and info is not None and now < renew_at(info, self._acme.renew_remaining):
                return Outcome(domain, "current")
            if now < state.next_attempt:
                return Outcome(domain, "waiting", state.last_error)
        log.info("ordering a certificate for %s from %s", domain, self._acme.directory)
        try:
            chain, key = self._issuer.issue(domain)
        except Exception as exc:  # any failure: record, back off, keep serving what we have
            detail = describe(exc)
            failures = state.failures + 1
            delay = backoff(
                failures, self._acme.retry_min, self._acme.retry_max, self._random.random()
            )
            self._storage.write_state(
                domain, RenewalState(failures, now + delay, detail, state.directory)
            )
            self._metrics.acme_orders.labels("failed").inc()
            log.warning(
                "certificate for %s not obtained (attempt %d, next in %.0f s): %s",
                domain, failures, delay, detail,
            )  # fmt: skip
            return Outcome(domain, "failed", detail)
        self._storage.save_certificate(domain, chain, key)
        self._storage.write_state(domain, RenewalState(directory=self._acme.directory))
        self._metrics.acme_orders.labels("issued").inc()
        log.info("certificate for %s obtained", domain)
        return Outcome(domain, "issued")

    def failures(self) -> dict[str, RenewalState]:
        """Each domain whose last order failed, with its error and next attempt, as every
        worker and process sharing the storage sees it (blocking: run off the loop)."""
        failed = {}
        for domain in self.domains:
            state = self._storage.read_state(domain)
            if state.failures:
                failed[domain] = state
        return failed

    def _next_wake(self) -> float:
        """Until the next check: the check interval (+-10%), or sooner when a retry or a
        renewal falls due before it."""
        now = self._clock()
        wake = self._acme.check_interval * (0.9 + 0.2 * self._random.random())
        for domain in self.domains:
            info = self._storage.read_certificate(domain)
            due = renew_at(info, self._acme.renew_remaining) if info is not None else now
            state = self._storage.read_state(domain)
            if state.failures:  # a failed order: retried at its next attempt, due or not
                due = state.next_attempt
            wake = min(wake, due - now)
        return max(wake, MIN_WAKE)
