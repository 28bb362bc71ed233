"""One worker process: serves every listener on sockets it is handed, until told to stop.

Shutdown order (``Worker.stop``, the steps ``Worker._shutdown_steps`` lists), the same
whether a signal or a test asks for it:

1. ``ready`` turns 503 (draining);
2. every listener stops accepting, idle keep-alive connections are closed, in-flight
   requests get up to ``server.shutdown_timeout`` seconds, then are cancelled;
3. background tasks (flushers, ACME renewal, the parent watch) are cancelled, and the
   edge cache's (refreshes, writes to Redis, the purge follower);
4. upstream pools and their health probes are closed, then the shared rate-limit
   backend and the ACME storage (their Redis clients);
5. the link store is closed;
6. the event pipeline is flushed (to Kafka within ``shutdown_timeout``, else to the
   spool) and closed;
7. the access log is flushed and closed.

Each step runs even if one before it failed (logged), so events are flushed whatever
else went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from gateway.config import Config, ConfigError, ConfigIssue, Listener, RedisBackend, load_config
from gateway.events.pipeline import EventPipeline
from gateway.events.sink import Sink
from gateway.handlers.builtin import Builtins
from gateway.http.h1 import GatewayServer
from gateway.http.h1request import request_factory
from gateway.http.listen import AcceptSite
from gateway.links.api import LinksApi
from gateway.links.store import FileLinkStore, KafkaLinkStore, LinkStore
from gateway.observability.accesslog import AccessLog
from gateway.observability.health import Readiness, State
from gateway.observability.metrics import Metrics
from gateway.process import background
from gateway.process.sockets import RESTART_KEYS, sockets_changed
from gateway.proxy.group import UpstreamRegistry
from gateway.request.errors import HTTPError
from gateway.request.path import Gateway
from gateway.request.runtime import RuntimeHolder, Services
from gateway.tls.shared import storage_for

# What a config does not use is never imported (a worker's memory): redis with shared
# limits, cryptography and acme with TLS.
if TYPE_CHECKING:
    from gateway.cache.service import CacheService
    from gateway.limits.shared import SharedBackend
    from gateway.tls.manager import Certificates

log = logging.getLogger("gateway.process.worker")

LINKS_FIRST_TRY = 10.0  # seconds the link store gets before the worker serves without it


class _Hooks:
    """Connects the HTTP server's reports to metrics and the access log."""

    def __init__(self, gateway: Gateway, metrics: Metrics) -> None:
        self.observe = gateway.observe
        self._metrics = metrics

    def opened(self, delta: int) -> None:
        self._metrics.open_connections.inc(delta)

    def refused(self) -> None:
        self._metrics.rejected_connections.inc()

    def h2(self, event: str, reason: str = "") -> None:
        self._metrics.http2_event(event, reason)


def _http2_mode(listener: Listener, config: Config) -> Literal["alpn", "prior_knowledge"] | None:
    """How a connection to ``listener`` may become HTTP/2, if it may."""
    if listener.tls:
        return "alpn" if config.tls is not None and config.tls.http2 else None
    return "prior_knowledge" if listener.h2c else None


class Worker:
    """Serves a config on pre-bound listening sockets; ``async with`` starts and stops it."""

    def __init__(
        self,
        config: Config,
        sockets: Sequence[tuple[Listener, socket.socket]],
        *,
        config_path: str | None = None,
        supervisor_pid: int | None = None,
        slot: int = 0,
        snapshot: str | None = None,
    ) -> None:
        self.metrics = Metrics()
        self.upstreams = UpstreamRegistry()
        # Made (not started) before the runtime, so handlers hold the sink from the start.
        self.pipeline = EventPipeline(
            config.kafka,
            config.spool,
            slot=slot,
            workers=config.server.worker_count,
            queue_size=config.tracking.queue_size,
            queue_bytes=config.tracking.queue_bytes,
            metrics=self.metrics,
        )
        backend = config.rate_limits.backend
        # Before the runtime, whose shared rules decide on it; closed in the shutdown order.
        self.limits_backend: SharedBackend | None = None
        if isinstance(backend, RedisBackend):
            from gateway.limits.shared import SharedBackend

            errors = self.metrics.ratelimit_backend_errors
            self.limits_backend = SharedBackend(backend, lambda why: errors.labels(why).inc())
        # The edge cache, when a route uses it at start (a restart adds one; see kinds).
        self.cache: CacheService | None = None
        if any(route.cache is not None for route in config.routes):
            from gateway.cache.service import CacheService

            self.cache = CacheService(config.cache, self.metrics)
        # One ACME storage (challenge answers, certificate store, renewer), closed in order.
        acme = config.tls.acme if config.tls is not None else None
        self.acme_storage = storage_for(acme) if acme is not None else None
        self.services = Services(
            self.metrics,
            self.upstreams,
            Sink(self.pipeline, lambda kind: self.metrics.observe_event(kind, "withheld")),
            limits_backend=self.limits_backend,
            cache=self.cache,
            acme_storage=self.acme_storage,
        )
        self.holder = RuntimeHolder(config, self.services)
        self.readiness = Readiness()
        self.config_path = config_path
        # Under the supervisor: its copy of the last valid config, read at start and on
        # SIGHUP, so a broken edit of the file never reaches a worker, restarted or not.
        self.snapshot = snapshot
        self.supervisor_pid = supervisor_pid
        self.slot = slot
        self.certificates: Certificates | None = None
        self._sockets = list(sockets)
        self._runners: list[web.ServerRunner] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._access_log: AccessLog | None = None
        self._pipeline_started = False
        self._links: LinkStore | None = None
        self.stop_requested = asyncio.Event()  # whoever runs the worker should call stop()
        self.stopped = asyncio.Event()

    @property
    def config(self) -> Config:
        return self.holder.current.config

    async def start(self) -> None:
        config = self.config
        server = config.server
        access_log = self._access_log = AccessLog(server.access_log.path)
        self._spawn(background.flush_access_log(access_log, self.metrics))
        self._spawn(background.flush_metrics(self.metrics))

        await self.pipeline.start()
        self._pipeline_started = True
        self.readiness.add_check("events", self.pipeline.health)
        if self.limits_backend is not None:
            self.readiness.add_check("rate_limits", self.limits_backend.health)
        if self.cache is not None:
            await self.cache.start()
            self.readiness.add_check("cache", self.cache.health)
        if config.redirects is not None:
            links = self._links = (
                KafkaLinkStore(config.kafka, config.redirects.topic)
                if config.kafka is not None
                else FileLinkStore(config.redirects.file)
            )
            self.readiness.add_check("links", links.health)
            if not await self._start_links(links, LINKS_FIRST_TRY):
                # Serve everything else meanwhile; redirect routes answer 503 until then.
                self._spawn(self._keep_starting_links(links))

        certificates = None
        if config.tls is not None and any(listener.tls for listener, _ in self._sockets):
            from gateway.tls.manager import Certificates

            # Blocking (reads the certificate files): once, before serving.
            certificates = self.certificates = Certificates(
                config.tls, self.metrics, self.acme_storage
            )
            self.readiness.add_check("certificates", certificates.health)
        gateway = Gateway(
            self.holder,
            Builtins(
                self.metrics,
                self.readiness,
                self.reload_from_api,
                self._links_api,
                lambda: self.certificates,
                lambda: self.cache,
                lambda: self.holder.current.config.experiments,
            ),
            self.metrics,
            access_log,
        )
        hooks = _Hooks(gateway, self.metrics)
        for listener, sock in self._sockets:
            http = GatewayServer(
                gateway.handler_for(listener),
                settings=lambda: self.holder.current.config.server,
                hooks=hooks,
                max_line_size=server.limits.max_header_bytes,
                max_field_size=server.limits.max_header_bytes,
                max_headers=server.limits.max_headers,
                # A client that hangs up cancels its handler: no work for nobody, and
                # its concurrency slot comes back at once.
                handler_cancellation=True,
                http2=_http2_mode(listener, config),
                request_factory=request_factory(
                    (lambda: self.holder.current.hsts) if listener.tls else None,
                    max_line=server.limits.max_header_bytes,
                ),
            )
            runner = web.ServerRunner(http, shutdown_timeout=server.shutdown_timeout)
            await runner.setup()
            self._runners.append(runner)
            ssl_context = certificates.store.context if listener.tls and certificates else None
            site = AcceptSite(
                runner,
                sock,
                ssl_context=ssl_context,
                handshake_timeout=lambda: self.holder.current.config.server.timeouts.read_header,
            )
            await site.start()
        if certificates is not None:
            # After the listeners: the CA's validation requests must find them accepting.
            for task in certificates.tasks():
                self._spawn(task)
        if self.supervisor_pid is not None:
            self._spawn(background.watch_parent(self.supervisor_pid, self.stop_requested))
        self.readiness.state = State.SERVING

    async def _start_links(self, links: LinkStore, limit: float) -> bool:
        try:
            async with asyncio.timeout(limit):
                await links.start()
        except Exception as exc:
            log.warning("links not loaded yet (%r); redirect routes answer 503", exc)
            await links.close()
            return False
        self.services.links = links  # redirect handlers read it per request
        return True

    async def _keep_starting_links(self, links: LinkStore) -> None:
        delay = 1.0
        while not await self._start_links(links, 30.0):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _links_api(self) -> LinksApi | None:
        store = self.holder.services.links
        if store is None:
            if self.config.redirects is not None:
                raise HTTPError(503, "links are loading", {"Retry-After": "1"})
            return None
        holder = self.holder
        return LinksApi(
            store, lambda: holder.current.config.redirects, lambda: holder.current.static_links
        )

    def flush_access_log(self) -> None:
        if self._access_log is not None:
            self._access_log.flush()

    async def stop(self) -> None:
        """Graceful shutdown in the order written at the top of this module."""
        if self.readiness.state is State.DRAINING:
            await self.stopped.wait()
            return
        self.readiness.state = State.DRAINING
        try:
            for name, step in self._shutdown_steps():
                try:
                    await step()
                except Exception:
                    log.exception("shutdown step %r failed; going on with the next", name)
        finally:
            self.metrics.flush()  # the last requests' and events' counts
            self.stopped.set()

    def _shutdown_steps(self) -> tuple[tuple[str, Callable[[], Awaitable[None]]], ...]:
        """The shutdown order, once: each step is safe whatever start-up got to."""
        return (
            ("drain listeners", self._drain_listeners),
            ("cancel background tasks", self._cancel_tasks),
            ("close the cache", self._close_cache),
            ("close upstream pools", self.upstreams.close),
            ("close the rate-limit backend", self._close_limits_backend),
            ("close the ACME storage", self._close_acme_storage),
            ("close the link store", self._close_links),
            ("flush and close the event pipeline", self._close_pipeline),
            ("close the access log", self._close_access_log),
        )

    async def _drain_listeners(self) -> None:
        # ServerRunner.cleanup: stop accepting, close idle keep-alives, wait for in-flight
        # requests up to shutdown_timeout, cancel the rest. All listeners drain together.
        for runner in self._runners:
            if isinstance(runner.server, GatewayServer):
                runner.server.draining = True
        await asyncio.gather(*(runner.cleanup() for runner in self._runners))

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_cache(self) -> None:
        if self.cache is not None:
            await self.cache.close()  # its refreshes use the upstream pools: before them

    async def _close_limits_backend(self) -> None:
        if self.limits_backend is not None:
            await self.limits_backend.close()

    async def _close_acme_storage(self) -> None:
        if self.acme_storage is not None:
            self.acme_storage.close()  # a Redis client with tls.acme.shared

    async def _close_links(self) -> None:
        if self._links is not None:
            await self._links.close()

    async def _close_pipeline(self) -> None:
        if self._pipeline_started:
            await self.pipeline.close(self.config.server.shutdown_timeout)

    async def _close_access_log(self) -> None:
        if self._access_log is not None:
            self._access_log.close()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def reload(self, config: Config | None = None) -> list[ConfigIssue]:
        """Swap in ``config`` (or the config file re-read); on errors keep the old one."""
        if config is None:
            if self.config_path is None:
                return [ConfigIssue("", "this gateway was not started from a config file")]
            try:
                loop = asyncio.get_running_loop()
                path = self.snapshot or self.config_path
                config = await loop.run_in_executor(None, load_config, path)
            except ConfigError as exc:
                log.error("config reload rejected, keeping the current config:\n%s", exc)
                return exc.issues
        old = self.config
        for key, get in RESTART_KEYS:
            if get(old) != get(config):
                log.warning("config reload: %s changed; it takes effect after a restart", key)
        runtime = await self.holder.swap(config)
        log.info("config reloaded (generation %d)", runtime.generation)
        return []

    async def reload_from_api(self) -> tuple[int, list[ConfigIssue]]:
        """The admin ``reload`` endpoint. Under a supervisor, every worker must reload, so
        this validates the file and asks the supervisor to fan out: 202, not yet applied."""
        if self.supervisor_pid is None:
            issues = await self.reload()
            self.metrics.config_reloads.labels("failure" if issues else "success").inc()
            return 200, issues
        if self.config_path is None:
            return 400, [ConfigIssue("", "this gateway was not started from a config file")]
        try:
            loop = asyncio.get_running_loop()
            config = await loop.run_in_executor(None, load_config, self.config_path)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("failure").inc()
            return 400, exc.issues
        if changed := sockets_changed(self.config, config):
            self.metrics.config_reloads.labels("failure").inc()
            return 400, [ConfigIssue(changed, "changed: restart the gateway to apply")]
        os.kill(self.supervisor_pid, signal.SIGHUP)
        return 202, []

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
