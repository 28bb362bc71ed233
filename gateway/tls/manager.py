"""A worker's TLS: its certificate store, its ACME renewer, and what they report
(expiry metric, ``ready`` detail, the admin ``certificates`` endpoints)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from gateway.config import Tls
from gateway.observability.health import CheckResult
from gateway.observability.metrics import Metrics
from gateway.tls.ondemand import OnDemand
from gateway.tls.renewal import Outcome, Renewer
from gateway.tls.storage import Storage
from gateway.tls.store import CertificateStore

log = logging.getLogger("gateway.acme")
_T = TypeVar("_T")


async def _in_thread(fn: Callable[[bool], _T], arg: bool) -> _T:
    """Run blocking ACME work in a daemon thread of its own: serving never waits for it,
    nor does a worker that stops while the CA is still validating (files are replaced
    atomically, and the next start clears answers left behind)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, exc = fn(arg), None
        except BaseException as error:  # handed to the awaiting task
            result, exc = None, error
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, exc)

    threading.Thread(target=run, name="acme", daemon=True).start()
    return await future


class Certificates:
    """Owns the worker's certificates; its tasks run until the worker cancels them."""

    def __init__(self, tls: Tls, metrics: Metrics, storage: Storage | None = None) -> None:
        """``storage``: the worker's ACME storage (it owns it), with ``tls.acme``."""
        self._tls = tls
        self._metrics = metrics
        self.store = CertificateStore(tls, storage)
        self._renewer = None
        if tls.acme is not None:
            assert storage is not None, "tls.acme needs its storage"
            self._renewer = Renewer(tls.acme, storage, metrics)
        self._failures: dict[str, str] = {}  # domain -> last failure this worker saw
        self._rescheduled = asyncio.Event()
        self.on_demand: OnDemand | None = None
        if tls.acme is not None and tls.acme.on_demand is not None:
            self.on_demand = OnDemand(tls.acme.on_demand, self._order_on_demand)
        self.publish()

    def tasks(self) -> list[Coroutine[Any, Any, None]]:
        tasks = [self.store.watch(self.publish)]
        if self._tls.acme is not None and self._tls.acme.challenge == "tls-alpn-01":
            tasks.append(self.store.watch_challenges())
        if self._renewer is not None:
            tasks.append(self._renew_forever())
            tasks.append(self._follow_failures())
        if self.on_demand is not None:
            tasks.append(self._serve_on_demand(self.on_demand))
        return tasks

    async def _serve_on_demand(self, on_demand: OnDemand) -> None:
        loop = asyncio.get_running_loop()

        def unknown(name: str) -> None:  # from the SNI callback
            loop.call_soon_threadsafe(on_demand.wanted, name)

        self.store.on_unknown = unknown
        await on_demand.run()

    async def _order_on_demand(self, name: str) -> bool:
        """Order (or load what another process ordered) ``name``; True once served."""
        renewer, acme = self._renewer, self._tls.acme
        assert renewer is not None and acme is not None
        renewer.on_demand.append(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + acme.order_timeout
        while True:
            (outcome,), _ = await _in_thread(lambda force: renewer.check(force, name), False)
            if outcome.status != "busy" or loop.time() > deadline:
                break
            await asyncio.sleep(1.0)  # another process orders it: load its result
        if outcome.status not in ("issued", "current"):
            renewer.on_demand.remove(name)
            self._failures[name] = outcome.detail
            return False
        loaded = await loop.run_in_executor(None, self.store.load_managed, name)
        self.store.adopt(loaded)
        self.publish()
        return True

    async def _follow_failures(self) -> None:
        """Whichever worker ordered, every worker's ``ready`` and ``certificates`` show a
        failed order until one succeeds (read from the storage each ``reload_interval``)."""
        assert self._renewer is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tls.reload_interval)
            try:
                failed = await loop.run_in_executor(None, self._renewer.failures)
            except Exception:  # a storage hiccup: the next turn reads again
                log.exception("reading the renewal state failed")
                continue
            self._failures = {domain: state.last_error for domain, state in failed.items()}
            assert self._tls.acme is not None
            for domain in self._tls.acme.domains:
                state = failed.get(domain)
                at = state.next_attempt if state is not None else 0.0
                self._metrics.acme_next_attempt.labels(domain).set(at)

    async def _renew_forever(self) -> None:
        assert self._renewer is not None and self._tls.acme is not None
        while True:
            try:
                outcomes, wake = await _in_thread(self._renewer.check, False)
                await self._after(outcomes)
            except Exception:  # a full disk, a permission: keep trying, never stop renewing
                log.exception("certificate check failed; trying again later")
                wake = self._tls.acme.retry_min
            # Until the next check, or sooner when a forced renewal set a new time.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wake):
                    await self._rescheduled.wait()
            self._rescheduled.clear()

    async def renew_now(self, only: str | None = None) -> list[Outcome] | None:
        """Order every ACME certificate (or ``only`` that name) now; "busy" outcomes while
        another process orders. None without ACME; no outcomes for a name not ordered."""
        if self._renewer is None:
            return None
        renewer = self._renewer
        outcomes, _ = await _in_thread(lambda force: renewer.check(force, only), True)
        await self._after(outcomes)
        self._rescheduled.set()  # a failure is retried at its next attempt, not next check
        return outcomes

    async def _after(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.status in ("failed", "waiting"):
                self._failures[outcome.domain] = outcome.detail
            elif outcome.status in ("issued", "current"):
                self._failures.pop(outcome.domain, None)
        if self._tls.acme is not None and self._tls.acme.challenge == "tls-alpn-01":
            await self.store.refresh_challenges()  # withdrawn: stop offering them at once
        if any(o.status == "issued" for o in outcomes):
            await self.store.refresh()  # this worker at once; the others at their next check
            self.publish()

    def publish(self) -> None:
        for name, not_after in self.store.expiries():
            if not_after is not None:
                self._metrics.certificate_expiry.labels(name).set(not_after.timestamp())

    def report(self) -> list[dict[str, object]]:
        return [
            {
                "name": name,
                "not_after": not_after.isoformat() if not_after else None,
                "placeholder": not_after is None,
                "last_error": self._failures.get(name),
            }
            for name, not_after in self.store.expiries()
        ]

    def health(self) -> CheckResult:
        """Ready unless a served certificate has expired; the detail lists each expiry."""
        now = datetime.now(UTC)
        parts, ok = [], True
        for name, not_after in self.store.expiries():
            if not_after is None:
                parts.append(f"{name}: self-signed placeholder until ACME issues one")
            else:
                ok = ok and not_after > now
                parts.append(f"{name}: expires {not_after.isoformat()}")
            if name in self._failures:
                parts[-1] += f" (last attempt failed: {self._failures[name]})"
        return CheckResult(ok, "; ".join(parts))
