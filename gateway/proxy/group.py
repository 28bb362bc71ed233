"""Upstream groups: the targets, connection pools and health checks of one proxy config.

A group outlives config reloads while its settings stay the same (pools stay warm,
health state stays known); the :class:`UpstreamRegistry` of each worker owns the groups
and closes those a reload no longer uses, and all of them at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from gateway.config import Proxy
from gateway.proxy.balancer import Balancer, Target
from gateway.proxy.breaker import Breaker
from gateway.proxy.upstream import Pool

log = logging.getLogger("gateway.proxy")


class UpstreamGroup:
    """Targets with a pool each, a balancer, and (optionally) active health probes."""

    def __init__(self, config: Proxy) -> None:
        self.config = config
        breaker = config.circuit_breaker
        self.targets = [
            Target(url.rstrip("/"), weight, Breaker(breaker, url) if breaker else None)
            for url, weight in config.weighted
        ]
        self.pools = {
            target: Pool(
                target.url,
                limit=config.max_connections_per_target,
                verify_tls=config.verify_tls,
                ca_file=config.ca_file,
            )
            for target in self.targets
        }
        self.balancer = Balancer(self.targets, config.policy)
        self._probes: list[asyncio.Task[None]] = []
        if config.active_health is not None:
            self._probes = [asyncio.ensure_future(self._probe(t)) for t in self.targets]

    def failed(self, target: Target) -> None:
        passive = self.config.passive_health
        loop = asyncio.get_running_loop()
        self.outcome(target, True)
        if target.record_failure(loop.time(), passive.failures, passive.window, passive.cooldown):
            log.warning("upstream %s marked down for %ss", target.url, passive.cooldown)

    def outcome(self, target: Target, failed: bool) -> None:
        """A request's outcome, for the target's circuit breaker (5xx and slow count)."""
        if target.breaker is not None:
            target.breaker.record(asyncio.get_running_loop().time(), failed)

    async def _probe(self, target: Target) -> None:
        check = self.config.active_health
        assert check is not None
        low, high = check.expect_status
        timeout = aiohttp.ClientTimeout(total=check.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    async with session.get(target.url + check.path, allow_redirects=False) as r:
                        healthy = low <= r.status <= high
                except (aiohttp.ClientError, TimeoutError):
                    healthy = False
                if healthy != target.probe_healthy:
                    log.warning("upstream %s is %s", target.url, "up" if healthy else "down")
                target.probe_healthy = healthy
                await asyncio.sleep(check.interval)

    async def close(self) -> None:
        for task in self._probes:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._probes, return_exceptions=True)
        for pool in self.pools.values():
            pool.close()


class UpstreamRegistry:
    """One worker's upstream groups, keyed by their full proxy settings."""

    def __init__(self) -> None:
        self._groups: dict[str, UpstreamGroup] = {}

    def get(self, config: Proxy) -> UpstreamGroup:
        key = config.model_dump_json()
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = UpstreamGroup(config)
        return group

    async def retain(self, used: set[UpstreamGroup]) -> None:
        """Close the groups a new runtime no longer uses."""
        for key, group in list(self._groups.items()):
            if group not in used:
                del self._groups[key]
                await group.close()

    async def close(self) -> None:
        await self.retain(set())
