"""Prometheus metrics that add up across worker processes.

Under the supervisor every process writes its samples to files in a shared directory
(prometheus-client's multiprocess mode, chosen by ``PROMETHEUS_MULTIPROC_DIR`` being set
before the process starts), and a scrape on any worker sums them. A single in-process
gateway (tests, embedding) keeps them in its own registry instead.

Per-request and per-event figures are added up in plain dicts and written at most every
``FLUSH_INTERVAL`` (and before every scrape): a multiprocess write takes a lock and
touches a memory-mapped file, about 4 us per request, a tenth of what hello costs.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client import values as prom_values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BUCKET_COUNT = len(_LATENCY_BUCKETS) + 1  # and +Inf
FLUSH_INTERVAL = 1.0  # seconds a worker's request and event counts may wait for a scrape


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def method_label(method: str) -> str:
    """Bounded label: a client inventing methods must not invent time series."""
    return method if method in _METHODS else "OTHER"


class Metrics:
    """The gateway's own metrics; one instance per process, kept across config reloads."""

    def __init__(self) -> None:
        # prometheus-client fixes the mode when it is first imported; ask it, not the env.
        self._multiprocess = prom_values.ValueClass is not prom_values.MutexValue
        # In multiprocess mode samples go to files whatever the registry; registering
        # them too would count them twice on a scrape.
        self._registry = CollectorRegistry()
        self._target = None if self._multiprocess else self._registry
        self._define_serving()
        self._define_limits()
        self._define_events()
        self._define_capabilities()
        self._define_cache()
        self._define_enrichment()
        self._event_children: dict[tuple[str, str], Counter] = {}
        self._limit_children: dict[tuple[str, str], Counter] = {}
        # labels() costs a lock and a tuple hash per call. Bounded: routes x 10 methods x 5.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # Not yet written: (route, method, class) -> [count, seconds, buckets]; (type, outcome).
        self._pending_requests: dict[tuple[str, str, int], list[Any]] = {}
        self._pending_events: dict[tuple[str, str], int] = {}
        self._pending_cache: dict[tuple[str, str], int] = {}  # (route, result) -> count
        self._cache_children: dict[tuple[str, str], Counter] = {}
        # Route -> handler kind (proxy, ...); pseudo-routes ("_builtin", ...) name their own.
        self._route_kinds: dict[str, str] = {}
        self._http2_streams = 0  # opened minus closed since the last flush

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, labels, registry=self._target)

    def _gauge(
        self,
        name: str,
        doc: str,
        labels: tuple[str, ...] = (),
        mode: Literal["livesum", "livemax"] = "livesum",
    ) -> Gauge:
        return Gauge(name, doc, labels, multiprocess_mode=mode, registry=self._target)

    def _define_serving(self) -> None:
        """Requests, connections, processes and the wire protocols."""
        self.requests = self._counter(
            "gateway_requests",
            "HTTP requests answered, by route, handler kind, method and status class.",
            ("route", "kind", "method", "status_class"),
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request head received to response written, by route and kind.",
            ("route", "kind"),
            buckets=_LATENCY_BUCKETS,
            registry=self._target,
        )
        self.open_connections = self._gauge(
            "gateway_open_connections", "Client connections open now."
        )
        self.rejected_connections = self._counter(
            "gateway_rejected_connections",
            "Client connections refused because a worker was at server.limits.max_connections.",
        )
        self.worker_restarts = self._counter(
            "gateway_worker_restarts",
            "Worker processes restarted by the supervisor after they died.",
        )
        self.config_reloads = self._counter(
            "gateway_config_reloads", "Config reloads, by result (success or failure).", ("result",)
        )
        self.overload_rejected = self._counter(
            "gateway_overload_rejected",
            "Requests answered 503 at server.limits.max_concurrent_requests.",
        )
        self.access_log_dropped = self._counter(
            "gateway_access_log_dropped",
            "Access log lines dropped because the log could not be written fast enough.",
        )
        self.http2_streams = self._gauge(
            "gateway_http2_streams_open", "HTTP/2 streams being served."
        )
        self.http2_resets = self._counter(
            "gateway_http2_resets_received", "RST_STREAM frames received from HTTP/2 clients."
        )
        self.http2_goaways = self._counter(
            "gateway_http2_goaways_sent",
            "GOAWAY frames sent, by reason: shutdown, idle, no_request, protocol_error, "
            "enhance_your_calm (h2's own caps), rapid_reset, control_flood, not_reading, "
            "and window_stalled (a stream reset, not a GOAWAY).",
            ("reason",),
        )

    def _define_limits(self) -> None:
        self.ratelimit_decisions = self._counter(
            "gateway_ratelimit_decisions",
            "Rate limit checks by rule and result: allowed, limited, dry_run_limited, exempt.",
            ("rule", "result"),
        )
        self.ratelimit_active_keys = self._gauge(
            "gateway_ratelimit_active_keys", "Keys (buckets) held per rate limit rule.", ("rule",)
        )
        self.ratelimit_evictions = self._counter(
            "gateway_ratelimit_evictions",
            "Buckets evicted from a rule's LRU to stay within its max_keys.",
            ("rule",),
        )
        self.ratelimit_backend_errors = self._counter(
            "gateway_ratelimit_backend_errors",
            "Shared rate-limit decisions Redis could not make (timeout or error): decided "
            "by rate_limits.backend.on_error instead.",
            ("reason",),
        )

    def _define_events(self) -> None:
        self.events = self._counter(
            "gateway_events",
            "Events by type and outcome: accepted, delivered, spooled, replayed, dropped, "
            "withheld (by tracking.enrich: a bot dropped, consent denied).",
            ("type", "outcome"),
        )
        self.event_queue_depth = self._gauge(
            "gateway_event_queue_depth", "Events waiting in memory for the sender."
        )
        self.spool_bytes = self._gauge(
            "gateway_spool_bytes", "Bytes of events held in the disk spool."
        )
        self.spool_corrupt_bytes = self._counter(
            "gateway_spool_corrupt_bytes",
            "Bytes cut from spool segments whose tail failed its checksum.",
        )
        self.producer_errors = self._counter(
            "gateway_producer_errors",
            "Kafka sends or connects that failed or timed out.",
            ("reason",),
        )
        self.websocket_frames = self._counter(
            "gateway_websocket_frames",
            "Tracker WebSocket frames: accepted, dropped (no room), refused (bad frame).",
            ("outcome",),
        )

    def _define_capabilities(self) -> None:
        """Links, static files and certificates."""
        self.redirect_misses = self._counter(
            "gateway_redirect_misses", "Short-link requests for a slug that is unknown or disabled."
        )
        self.static_cache = self._counter(
            "gateway_static_cache",
            "Static file cache lookups and evictions, by event: hit, miss, eviction.",
            ("event",),
        )
        self.static_cache_bytes = self._gauge(
            "gateway_static_cache_bytes",
            "Bytes held by the static file caches (files and compressed variants).",
        )
        self.certificate_expiry = self._gauge(
            "gateway_certificate_expiry_timestamp_seconds",
            "When each served certificate expires (Unix time), by name.",
            ("name",),
            mode="livemax",
        )
        self.acme_orders = self._counter(
            "gateway_acme_orders",
            "ACME certificate orders, by result: issued, failed.",
            ("result",),
        )
        self.acme_next_attempt = self._gauge(
            "gateway_acme_next_attempt_timestamp_seconds",
            "When a name whose last order failed is ordered again (Unix time); 0: not failing.",
            ("name",),
            mode="livemax",
        )

    def _define_cache(self) -> None:
        """The edge cache (gateway.cache)."""
        self.cache_requests = self._counter(
            "gateway_cache_requests",
            "Requests of cached routes by result: hit, stale (served stale: max-stale or "
            "stale-while-revalidate), stale_error (served stale for a failing upstream), "
            "collapsed (waited for another request's fill), revalidated (a 304 refreshed "
            "it), miss, pass (never stored: unsafe methods, uncacheable keys).",
            ("route", "result"),
        )
        self.cache_stored = self._counter(
            "gateway_cache_stored", "Answers stored in the cache, by route.", ("route",)
        )
        self.cache_bytes = self._gauge("gateway_cache_bytes", "Bytes held by the memory tier.")
        self.cache_entries = self._gauge("gateway_cache_entries", "Entries in the memory tier.")
        self.cache_evictions = self._counter(
            "gateway_cache_evictions",
            "Entries evicted from the memory tier to stay within cache.memory_bytes.",
        )
        self.cache_purges = self._counter(
            "gateway_cache_purges",
            "Purges asked of this worker, by kind: url, prefix, tag, invalidate (RFC 9111 §4.4).",
            ("kind",),
        )
        self.cache_redis_errors = self._counter(
            "gateway_cache_redis_errors",
            "Redis tier requests that failed or timed out (the memory tier served).",
            ("reason",),
        )

    def _define_enrichment(self) -> None:
        """tracking.enrich (gateway.enrich) and experiments: counters by name."""
        counter = self._counter
        self._enrichment = {
            "bots": counter(
                "gateway_enrich_bots",
                "Events judged bots, by source and the action taken: flag, drop, route.",
                ("source", "action"),
            ),
            "violations": counter(
                "gateway_enrich_plan_violations",
                "Events a tracking plan found fault with, by plan and mode.",
                ("plan", "mode"),
            ),
            "consent": counter(
                "gateway_enrich_consent_drops", "Events dropped: consent denied.", ("category",)
            ),
            "geo": counter(
                "gateway_enrich_geo",
                "Geo database events, by file: reloaded (replaced while serving), "
                "reload_failed (the replacement could not be read), bad_record (a lookup "
                "hit corrupt data: nothing known for that address).",
                ("database", "event"),
            ),
            "exposures": counter(  # gateway.experiments: one series per variant per day
                "gateway_experiment_exposures",
                "experiment_exposure events, by experiment, variant and UTC day.",
                ("experiment", "variant", "day"),
            ),
        }

    def count_enrichment(self, name: str, labels: tuple[str, ...]) -> None:
        self._enrichment[name].labels(*labels).inc()

    def count_exposure(self, *labels: str) -> None:  # experiment, variant, day
        self._enrichment["exposures"].labels(*labels).inc()

    def set_route_kinds(self, kinds: Mapping[str, str]) -> None:
        """The handler kind of each route of a new runtime (its labels from now on)."""
        for route, kind in kinds.items():
            if self._route_kinds.get(route, kind) != kind:  # a reload gave it a new kind
                for key in [key for key in self._request_children if key[0] == route]:
                    del self._request_children[key]
            self._route_kinds[route] = kind

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method if method in _METHODS else "OTHER", status // 100)
        pending = self._pending_requests.get(key)
        if pending is None:
            pending = self._pending_requests[key] = [0, 0.0, [0] * _BUCKET_COUNT]
        pending[0] += 1
        pending[1] += seconds
        # The bucket prometheus-client's Histogram.observe would count it in.
        pending[2][bisect_left(_LATENCY_BUCKETS, seconds)] += 1

    def observe_event(self, event_type: str, outcome: str, count: int = 1) -> None:
        key = (event_type, outcome)
        self._pending_events[key] = self._pending_events.get(key, 0) + count

    def observe_cache(self, route: str, result: str) -> None:
        """A cached route's request (``gateway_cache_requests_total``), written at flush."""
        key = (route, result)
        self._pending_cache[key] = self._pending_cache.get(key, 0) + 1

    def flush(self) -> None:
        """Write what was observed since the last flush to prometheus-client."""
        requests, self._pending_requests = self._pending_requests, {}
        for key, (count, seconds, buckets) in requests.items():
            children = self._request_children.get(key)
            if children is None:
                route, method, status_class = key
                kind = self._route_kinds.get(route, route.lstrip("_"))
                children = self._request_children[key] = (
                    self.requests.labels(route, kind, method, f"{status_class}xx"),
                    self.duration.labels(route, kind),
                )
            children[0].inc(count)
            # Histogram has no observe-many: add to its bucket and sum values directly.
            histogram: Any = children[1]
            for index, n in enumerate(buckets):
                if n:
                    histogram._buckets[index].inc(n)
            histogram._sum.inc(seconds)
        if self._http2_streams:
            self.http2_streams.inc(self._http2_streams)
            self._http2_streams = 0
        events, self._pending_events = self._pending_events, {}
        for (event_type, outcome), count in events.items():
            _child(self.events, self._event_children, event_type, outcome).inc(count)
        cached, self._pending_cache = self._pending_cache, {}
        for (route, result), count in cached.items():
            _child(self.cache_requests, self._cache_children, route, result).inc(count)

    def http2_event(self, event: str, reason: str = "") -> None:
        """An HTTP/2 connection's event (gateway.http.h2.H2Hooks)."""
        if event == "stream_opened":
            self._http2_streams += 1  # written at flush: a multiprocess inc costs 2 µs
        elif event == "stream_closed":
            self._http2_streams -= 1
        elif event == "reset_received":
            self.http2_resets.inc()
        elif event == "goaway":
            self.http2_goaways.labels(reason).inc()

    def observe_limit(self, rule: str, result: str) -> None:
        _child(self.ratelimit_decisions, self._limit_children, rule, result).inc()

    def static_report(self) -> Callable[[str, int], None]:
        """Callback for a static file cache: hits, misses, evictions and its size."""
        children = {event: self.static_cache.labels(event) for event in ("hit", "miss", "eviction")}

        def report(event: str, value: int) -> None:
            if event == "bytes":  # a change in bytes held, so several caches add up
                self.static_cache_bytes.inc(value)
            else:
                children[event].inc(value)

        return report

    def limiter_size(self, rule: str) -> Callable[[int, bool], None]:
        """Callback for a rule's limiter: its key count changed, maybe by an eviction."""
        keys = self.ratelimit_active_keys.labels(rule)
        evictions = self.ratelimit_evictions.labels(rule)

        def report(size: int, evicted: bool) -> None:
            keys.set(size)
            if evicted:
                evictions.inc()

        return report

    def render(self) -> bytes:
        """The Prometheus text exposition, summed over all workers when under a supervisor.
        Blocking, so callers run it in a thread, after :meth:`flush` on the loop (the
        other workers' counts are at most ``FLUSH_INTERVAL`` old)."""
        if not self._multiprocess:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def _child(counter: Counter, cache: dict[tuple[str, str], Counter], *labels: str) -> Counter:
    """A labelled child, cached: labels() takes a lock and hashes on every call."""
    key = (labels[0], labels[1])
    child = cache.get(key)
    if child is None:
        child = cache[key] = counter.labels(*labels)
    return child


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay in the totals)."""
    if multiprocess_dir() is not None:
        prom_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
