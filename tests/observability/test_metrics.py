"""Request and event counts are added up locally and written to prometheus-client in
flushes: what a scrape shows must be what observing each one directly would show."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gateway.observability.metrics import _LATENCY_BUCKETS, Metrics

SECONDS = (0.0005, 0.0007, 0.001, 0.0249, 3.0, 20.0, 0.0)  # bucket bounds included


def _lines(text: bytes, prefix: str) -> list[str]:
    return [line for line in text.decode().splitlines() if line.startswith(prefix)]


def test_flushed_histogram_equals_direct_observation() -> None:
    metrics = Metrics()
    for seconds in SECONDS:
        metrics.observe_request("hello", "GET", 200, seconds)
    reference = CollectorRegistry()
    direct = Histogram(
        "gateway_request_duration_seconds", "x", ("route", "kind"),
        buckets=_LATENCY_BUCKETS, registry=reference,
    )  # fmt: skip
    for seconds in SECONDS:
        direct.labels("hello", "hello").observe(seconds)
    metrics.flush()
    ours = _lines(metrics.render(), "gateway_request_duration_seconds_")
    theirs = _lines(generate_latest(reference), "gateway_request_duration_seconds_")
    assert [line for line in ours if "_created" not in line] == [
        line for line in theirs if "_created" not in line
    ]
    assert len(ours) == len(_LATENCY_BUCKETS) + 1 + 2 + 1  # buckets, +Inf, count, sum, created


def test_counts_wait_for_a_flush_and_are_written_once() -> None:
    metrics = Metrics()
    metrics.observe_request("hello", "BREW", 404, 0.001)
    metrics.observe_event("pixel", "accepted")
    metrics.observe_event("pixel", "accepted", 4)
    before = metrics.render()
    assert not _lines(before, "gateway_requests_total{")
    metrics.flush()
    metrics.flush()  # nothing new: nothing added twice
    text = metrics.render().decode()
    line = (
        'gateway_requests_total{kind="hello",method="OTHER",route="hello",status_class="4xx"} 1.0'
    )
    assert line in text
    assert 'gateway_events_total{outcome="accepted",type="pixel"} 5.0' in text


def test_requests_are_labelled_with_their_routes_handler_kind() -> None:
    metrics = Metrics()
    metrics.set_route_kinds({"api": "proxy"})
    metrics.observe_request("api", "GET", 200, 0.001)
    metrics.observe_request("_gateway", "GET", 200, 0.001)
    metrics.flush()
    metrics.set_route_kinds({"api": "snowplow"})  # a reload made it another kind
    metrics.observe_request("api", "GET", 200, 0.001)
    metrics.flush()
    text = metrics.render().decode()
    for kind, route in (("proxy", "api"), ("snowplow", "api"), ("gateway", "_gateway")):
        labels = f'kind="{kind}",method="GET",route="{route}",status_class="2xx"'
        assert f"gateway_requests_total{{{labels}}} 1.0" in text
