"""The benchmark suite: wrk parsing, /proc maths, report layout, and one real smoke run."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from cryptography import x509

from benchmarks.__main__ import main
from benchmarks.broker import record_counter, settle, tansu
from benchmarks.configs import (
    WRITE_KEY,
    backend_site,
    caddy_quote,
    caddyfile,
    gateway_config,
    nginx_config,
    nginx_quote,
    proxy_site,
    redirect_site,
    respond_site,
    segment_site,
    static_site,
)
from benchmarks.fixtures import (
    BACKEND_BODY,
    FILES,
    Fixtures,
    file_bytes,
    prepared,
    work_directory,
)
from benchmarks.load import (
    WrkError,
    WrkStats,
    lua_string,
    parse_wrk,
    to_ms,
    wrk_command,
    wrk_script,
)
from benchmarks.machine import Machine, Tools, find_tools
from benchmarks.outcomes import (
    Delivery,
    Failure,
    FootprintResult,
    IdleResult,
    LoadResult,
    Run,
    ScenarioOutcome,
    ServerSummary,
    delivery,
    ratio,
    summarize,
)
from benchmarks.probe import Answer, answer_mismatch, fetch, mismatch
from benchmarks.procstat import CLOCK_TICKS, ProcStat, TreeSample, Usage, descendants, parse_stat
from benchmarks.report import events_section, render
from benchmarks.scenarios import BY_NAME, REDIRECT_TARGET, SCENARIOS, basic_auth
from benchmarks.settings import Settings, capacity
from benchmarks.targets import TargetRow, evaluate
from gateway.config import parse_config
from gateway.events.snowplow import parse, payload_items
from gateway.handlers.collect import PIXEL
from gateway.handlers.intake import check_event, split_events

ROOT = Path(__file__).resolve().parents[2]

# Captured from wrk 4.1.0 against the gateway's hello route (2 workers).
WRK_CLEAN = """\
Running 2s test @ http://127.0.0.1:18090/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms  549.79us  10.34ms   77.46%
    Req/Sec    37.92k     2.12k   41.33k    65.00%
  Latency Distribution
     50%    1.24ms
     75%    1.47ms
     90%    1.72ms
     99%    2.56ms
  75522 requests in 2.00s, 12.68MB read
Requests/sec:  37700.21
Transfer/sec:      6.33MB
"""

# Captured from wrk 4.1.0 with 300 connections against an nginx allowed 64, on a 404 path.
WRK_WITH_ERRORS = """\
Running 2s test @ http://127.0.0.1:18091/missing
  1 threads and 300 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.36ms    2.46ms   9.47ms   80.60%
    Req/Sec   143.50     53.03   181.00    100.00%
  Latency Distribution
     50%    3.39ms
     75%    4.84ms
     90%    9.23ms
     99%    9.47ms
  67 requests in 2.10s, 21.13KB read
  Socket errors: connect 0, read 52527, write 0, timeout 0
  Non-2xx or 3xx responses: 67
Requests/sec:     31.93
Transfer/sec:     10.07KB
"""


def test_parse_wrk_reads_rate_percentiles_and_request_count() -> None:
    assert parse_wrk(WRK_CLEAN) == WrkStats(
        requests_per_s=37700.21,
        p50_ms=1.24,
        p99_ms=2.56,
        requests=75522,
        seconds=2.0,
        non_2xx_3xx=0,
        socket_errors=0,
    )


def test_parse_wrk_counts_non_2xx_3xx_and_every_socket_error() -> None:
    stats = parse_wrk(WRK_WITH_ERRORS)
    assert (stats.non_2xx_3xx, stats.socket_errors, stats.errors) == (67, 52527, 52594)
    assert (stats.requests_per_s, stats.p50_ms, stats.p99_ms) == (31.93, 3.39, 9.47)


def test_parse_wrk_takes_the_real_duration_and_counts_answers_below_400() -> None:
    assert (parse_wrk(WRK_CLEAN).seconds, parse_wrk(WRK_CLEAN).successes) == (2.0, 75522)
    assert (parse_wrk(WRK_WITH_ERRORS).seconds, parse_wrk(WRK_WITH_ERRORS).successes) == (2.1, 0)


def test_parse_wrk_rejects_output_that_is_not_a_report() -> None:
    with pytest.raises(WrkError, match="unexpected wrk output"):
        parse_wrk("unable to connect to 127.0.0.1:18091 Connection refused\n")


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("549.79us", 0.54979),
        ("1.24ms", 1.24),
        ("1.02s", 1020.0),
        ("2.50m", 150_000.0),
        ("1.00h", 3_600_000.0),
        ("0.00us", 0.0),
    ],
)
def test_to_ms_converts_every_wrk_latency_unit(text: str, ms: float) -> None:
    assert to_ms(text) == pytest.approx(ms)


def test_to_ms_rejects_a_number_without_a_unit() -> None:
    with pytest.raises(WrkError):
        to_ms("1.24")


def test_wrk_command_uses_one_thread_and_optional_lua_script() -> None:
    plain = wrk_command("wrk", "http://127.0.0.1:1/", connections=50, duration=5)
    assert plain == ["wrk", "-t1", "-c50", "-d5s", "--latency", "http://127.0.0.1:1/"]
    with_script = wrk_command(
        "wrk", "http://127.0.0.1:1/", connections=8, duration=2, script=Path("/t/post.lua")
    )
    assert with_script[-3:] == ["-s", "/t/post.lua", "http://127.0.0.1:1/"]


def test_lua_string_keeps_every_byte_and_escapes_what_lua_would_read_otherwise() -> None:
    assert lua_string(b'say "hi" \\ ok') == '"say \\"hi\\" \\\\ ok"'
    # Three digits always, so the "1" after the byte 255 cannot join its escape.
    assert lua_string(b"a\n\xff1\x00") == '"a\\010\\2551\\000"'


def test_wrk_script_is_none_for_a_plain_get() -> None:
    assert wrk_script("GET", b"", {}) is None


def test_wrk_script_sets_method_body_and_headers_only() -> None:
    script = wrk_script("POST", b'{"a":1}', {"Content-Type": "application/json"})
    assert script == (
        'wrk.method = "POST"\n'
        'wrk.body = "{\\"a\\":1}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )


def test_segment_batch_request_carries_100_tracks_under_segments_limits() -> None:
    scenario = BY_NAME["segment_batch"]
    body = orjson.loads(scenario.body)
    assert [call["type"] for call in body["batch"]] == ["track"] * 100
    assert scenario.events_per_request == 100
    assert 15_000 < len(scenario.body) < 500 * 1024
    assert max(len(orjson.dumps(call)) for call in body["batch"]) < 32 * 1024
    assert scenario.headers["Authorization"] == basic_auth(WRITE_KEY)
    assert basic_auth("wk") == "Basic d2s6"


def test_intake_and_snowplow_bodies_are_what_their_clients_send() -> None:
    intake = BY_NAME["intake_batch"]
    lines = split_events(intake.body, 64 << 10)
    assert [check_event(n, line)["event_type"] for n, line in enumerate(lines, 1)] == [
        "behavioral"
    ] * 100  # fmt: skip
    assert (intake.status, intake.events_per_request) == (204, 100)
    assert intake.headers["Authorization"] == basic_auth("rill", "bench-intake-secret")
    snowplow = BY_NAME["snowplow_tp2"]
    items = payload_items(orjson.loads(snowplow.body))
    assert [parse(p, received_at=0, network_user_id=None).event_type for p in items] == [
        "page", "track"
    ] * 5  # fmt: skip
    assert (snowplow.expected_body, snowplow.events_per_request) == (b"ok", 10)


def test_tracker_post_request_is_a_small_json_object_answered_204() -> None:
    scenario = BY_NAME["tracker_post"]
    assert (scenario.method, scenario.status, scenario.events_per_request) == ("POST", 204, 1)
    assert isinstance(orjson.loads(scenario.body), dict)
    assert 100 < len(scenario.body) < 200


def test_scenarios_stay_in_registry_order_with_fast_variants_beside_durable_ones() -> None:
    assert [scenario.name for scenario in SCENARIOS] == [
        "hello", "proxy_small", "proxy_visitor", "proxy_experiment", "proxy_middleware",
        "proxy_small_c1000", "proxy_1m", "proxy_cached",
        "proxy_cached_c1000", "static_1k",
        "static_1m",
        "pixel", "pixel_mix", "pixel_enriched", "tracker_post", "tracker_post_fast",
        "segment_batch", "segment_batch_fast",
        "intake_batch", "snowplow_tp2", "redirect", "local_limited", "redis_limited",
        "hello_https", "hello_https_new", "proxy_https", "hello_h2", "proxy_h2", "static_h2",
        "idle_10k", "worker_rss",
    ]  # fmt: skip
    assert [scenario.name for scenario in SCENARIOS if scenario.pending] == []


def test_https_scenarios_give_every_server_the_same_certificate(tmp_path: Path) -> None:
    site = dataclasses.replace(respond_site("hi"), tls=("/c/cert.pem", "/c/key.pem"))
    text = gateway_config(site, port=8443, workers=1, capacity=10, workdir=tmp_path)
    gateway = orjson.loads(text)
    assert gateway["server"]["listeners"][0]["tls"] is True
    assert gateway["tls"] == {"certificates": [{"cert": "/c/cert.pem", "key": "/c/key.pem"}]}
    nginx = nginx_config(site, port=8443, workers=1, capacity=10, prefix=tmp_path)
    assert "listen 127.0.0.1:8443 ssl http2;" in nginx
    assert "ssl_certificate /c/cert.pem;" in nginx and "ssl_certificate_key /c/key.pem;" in nginx
    caddy = caddyfile(site, port=8443)
    assert "https://127.0.0.1:8443 {\n\ttls /c/cert.pem /c/key.pem\n" in caddy
    assert BY_NAME["hello_https_new"].headers == {"Connection": "close"}
    assert all(BY_NAME[name].tls for name in ("hello_https", "hello_https_new", "proxy_https"))


def test_pixel_expects_each_servers_own_body() -> None:
    scenario = BY_NAME["pixel"]
    assert scenario.expected_body_for("gateway") == PIXEL
    assert len(scenario.expected_body_for("nginx")) == 43  # nginx's empty_gif
    assert scenario.expected_body_for("caddy") == b""


@pytest.mark.parametrize(
    ("name", "route_delivery"),
    [
        ("pixel", None),
        ("tracker_post_fast", "fast"),
        ("segment_batch", "durable"),
        ("intake_batch", "durable"),
        ("snowplow_tp2", "durable"),
        ("redirect", None),
    ],
)
def test_tracking_sites_give_the_gateway_a_config_it_accepts(
    name: str, route_delivery: str | None, tmp_path: Path
) -> None:
    site = BY_NAME[name].site
    assert site is not None
    text = gateway_config(
        site(Fixtures(tmp_path)),
        port=8080,
        workers=2,
        capacity=306,
        workdir=tmp_path,
        kafka="127.0.0.1:9",
    )
    config = parse_config(text.encode(), env={})
    assert config.kafka is not None
    assert (config.kafka.bootstrap_servers, config.kafka.topic) == (("127.0.0.1:9",), "events")
    assert config.kafka.idempotence is False
    assert [route.delivery for route in config.routes] == [route_delivery]


def test_segment_site_accepts_the_write_key_the_requests_send(tmp_path: Path) -> None:
    config = parse_config(
        gateway_config(
            segment_site("durable"), port=8080, workers=1, capacity=306, workdir=tmp_path
        ).encode(),
        env={},
    )
    assert config.tracking.write_keys == (WRITE_KEY,)
    assert config.kafka is None  # no broker given: events stay in the spool


def test_redirect_site_declares_its_link_and_keeps_the_links_file_in_the_run(
    tmp_path: Path,
) -> None:
    site = redirect_site("go", "https://shop.example/sale")
    assert "location = /l/go { return 302 https://shop.example/sale; }" in site.nginx_locations
    assert "server_tokens off;" in site.nginx_locations
    assert site.caddy_directives == "redir /l/go https://shop.example/sale 302"
    text = gateway_config(site, port=8080, workers=1, capacity=306, workdir=tmp_path)
    config = parse_config(text.encode(), env={})
    assert config.redirects is not None
    assert config.redirects.file == str(tmp_path / "links.jsonl")
    assert config.redirects.links == ({"slug": "go", "target": "https://shop.example/sale"},)
    [route] = config.routes
    assert (route.match.path_prefix, route.redirect is not None) == ("/l", True)


def test_redirect_scenario_checks_the_302_and_its_location_on_every_server() -> None:
    scenario = BY_NAME["redirect"]
    assert (scenario.path, scenario.status, scenario.events_per_request) == ("/l/go", 302, 1)
    assert scenario.expected_headers == {"Location": REDIRECT_TARGET}
    assert scenario.expected_body_for("gateway") == scenario.expected_body_for("caddy") == b""
    assert b"<center>nginx</center>" in scenario.expected_body_for("nginx")  # no version


def test_mismatch_names_the_status_then_each_expected_header_then_the_body() -> None:
    answer = Answer(302, b"", {"location": "https://shop.example/sale", "server": "x"})
    location = {"Location": "https://shop.example/sale"}
    assert mismatch(answer, status=302, body=b"", headers=location) is None
    assert mismatch(answer, status=200, body=b"", headers=location) == "answered 302, expected 200"
    assert mismatch(
        answer, status=302, body=b"", headers={"Location": "https://shop.example/"}
    ) == ("answered Location: 'https://shop.example/sale', expected 'https://shop.example/'")
    assert mismatch(answer, status=302, body=b"", headers={"Cache-Control": "no-store"}) == (
        "answered Cache-Control: None, expected 'no-store'"
    )
    assert mismatch(answer, status=302, body=b"x") == "answered b'', expected b'x'"


async def test_fetch_reports_a_redirect_without_following_it() -> None:
    followed: list[str] = []

    async def redirect(_: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/elsewhere"}, text="moved")

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.Response(text="followed")

    app = web.Application()
    app.router.add_get("/go", redirect)
    app.router.add_get("/elsewhere", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        answer = await fetch(f"http://127.0.0.1:{port}/go")
    finally:
        await runner.cleanup()
    assert (answer.status, answer.body, answer.headers["location"]) == (302, b"moved", "/elsewhere")
    assert followed == []


def test_delivery_counts_a_shortfall_only_for_answered_events_missing_from_kafka() -> None:
    lost = delivery(expected=1000, delivered=990, load_s=4.0, drain_s=1.0, broker_cores=0.5)
    assert lost == Delivery(1000, 990, 10, 198.0, 1.0, 0.5)
    # wrk does not count requests in flight when it stops; the gateway answered them anyway.
    extra = delivery(expected=1000, delivered=1050, load_s=5.0, drain_s=0.0, broker_cores=0.1)
    assert (extra.shortfall, extra.events_per_s) == (0, 210.0)
    none = delivery(expected=0, delivered=0, load_s=0.0, drain_s=0.0, broker_cores=0.0)
    assert (none.shortfall, none.events_per_s) == (0, 0.0)


def test_summarize_sums_shortfalls_per_round_so_an_extra_round_cannot_hide_one() -> None:
    runs: list[Run] = [
        LoadResult(100.0, 1.0, 2.0, 0, 1.0, 50.0, Delivery(500, 490, 10, 98.0, 0.2, 0.1)),
        LoadResult(120.0, 1.0, 2.0, 0, 1.0, 50.0, Delivery(600, 650, 0, 130.0, 0.4, 0.3)),
        LoadResult(110.0, 1.0, 2.0, 0, 1.0, 50.0, Delivery(550, 550, 0, 110.0, 0.3, 0.2)),
    ]
    median = summarize("gateway", runs).median
    assert isinstance(median, LoadResult)
    assert median.delivery == Delivery(1650, 1690, 10, 110.0, 0.3, 0.2)


async def test_settle_returns_once_the_target_count_holds_still() -> None:
    counts = iter([5, 8, 10, 10, 10])

    async def count() -> int:
        return next(counts)

    settled = await settle(count, 10, interval=0.01, quiet=5.0, limit=5.0)
    assert settled.count == 10
    assert settled.seconds < 1.0


async def test_settle_gives_up_on_a_count_that_stops_short_of_its_target() -> None:
    async def count() -> int:
        return 7

    settled = await settle(count, 10, interval=0.01, quiet=0.1, limit=5.0)
    assert settled.count == 7
    assert settled.seconds < 0.1  # the last growth was the first count


async def test_record_counter_counts_every_record_though_tansu_reports_batch_offsets(
    tmp_path: Path,
) -> None:
    async with tansu(tmp_path) as broker, record_counter(broker.bootstrap, "events") as counter:
        assert await counter.count() == 0
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            sent = 0
            for size in (1, 7, 40, 300):  # batches of several sizes, on every partition
                acks = [await producer.send("events", b"x", key=b"%d" % i) for i in range(size)]
                await asyncio.gather(*acks)
                sent += size
        finally:
            await producer.stop()
        assert await counter.count() == sent == 348


def test_parse_stat_survives_spaces_and_parentheses_in_the_command_name() -> None:
    line = (
        "4242 (nginx: worker (x)) S 4240 4240 4240 0 -1 4194624 512 0 0 0 "
        "700 300 0 0 20 0 1 0 123456 11000000 2750 18446744073709551615\n"
    )
    assert parse_stat(line) == ProcStat(ppid=4240, cpu_ticks=1000, rss_pages=2750)


def test_descendants_follow_the_tree_from_the_root_only() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 20: 1, 21: 20}
    assert descendants(10, parents) == {10, 11, 12, 13}
    assert descendants(99, parents) == set()


def test_usage_counts_cpu_of_processes_that_start_or_exit_during_the_run() -> None:
    def sample(at: float, ticks: dict[int, int]) -> TreeSample:
        return TreeSample(at, {pid: ProcStat(1, n, 100) for pid, n in ticks.items()})

    second = CLOCK_TICKS
    usage = Usage.starting(sample(0.0, {1: 10, 2: 50}))
    usage.add(sample(1.0, {1: 10 + second, 2: 50 + second // 2, 3: second}))  # 3 started
    usage.add(sample(2.0, {1: 10 + 2 * second, 3: second}))  # 2 exited
    assert usage.cpu_seconds == pytest.approx(3.5)
    assert usage.cores == pytest.approx(1.75)


def test_summarize_takes_medians_sums_errors_and_keeps_failures() -> None:
    runs: list[Run] = [
        LoadResult(100.0, 1.0, 5.0, 1, 0.5, 10.0),
        Failure("body check: GET / answered 404"),
        LoadResult(300.0, 3.0, 3.0, 2, 1.5, 30.0),
        LoadResult(200.0, 2.0, 4.0, 0, 1.0, 20.0),
    ]
    assert summarize("nginx", runs) == ServerSummary(
        "nginx",
        LoadResult(200.0, 2.0, 4.0, 3, 1.0, 20.0),
        runs=4,
        failures=("body check: GET / answered 404",),
    )


def test_ratio_is_missing_without_both_figures_or_with_a_zero_denominator() -> None:
    assert ratio(30.0, 120.0) == 0.25
    assert (ratio(None, 1.0), ratio(1.0, None), ratio(1.0, 0.0)) == (None, None, None)


def test_string_literals_keep_a_body_byte_for_byte() -> None:
    assert nginx_quote('say "hi"\\\n') == '"say \\"hi\\"\\\\\\n"'
    assert caddy_quote('say "hi"\n') == '"say \\"hi\\"\n"'


NGINX_PROXY_CONF = """\
daemon off;
master_process on;
worker_processes 2;
pid /w/nginx/nginx.pid;
error_log /w/nginx/error.log warn;

events {
    worker_connections 2256;
}

http {
    access_log off;
    client_body_temp_path /w/nginx/client_body;
    proxy_temp_path /w/nginx/proxy;
    fastcgi_temp_path /w/nginx/fastcgi;
    uwsgi_temp_path /w/nginx/uwsgi;
    scgi_temp_path /w/nginx/scgi;
    default_type text/plain;
    charset utf-8;
    # The default (1000) closes each wrk connection every 1000 requests; neither the
    # gateway nor Caddy does that, so it would skew the comparison.
    keepalive_requests 1000000;

    upstream backend { server 127.0.0.1:9000; keepalive 64; }

    server {
        listen 127.0.0.1:8080;
        location / { proxy_pass http://backend; proxy_http_version 1.1; \
proxy_set_header Connection ""; }
    }
}
"""


def test_nginx_proxies_through_an_upstream_block_that_keeps_connections_alive() -> None:
    config = nginx_config(
        proxy_site("127.0.0.1:9000"), port=8080, workers=2, capacity=2256, prefix=Path("/w/nginx")
    )
    assert config == NGINX_PROXY_CONF


def test_nginx_config_without_upstreams_keeps_its_layout() -> None:
    config = nginx_config(
        respond_site("hi"), port=8080, workers=2, capacity=306, prefix=Path("/w/nginx")
    )
    assert "upstream" not in config
    assert config.endswith(
        "    keepalive_requests 1000000;\n"
        "\n"
        "    server {\n"
        "        listen 127.0.0.1:8080;\n"
        '        location / { return 200 "hi"; }\n'
        "    }\n"
        "}\n"
    )


def test_caddy_reverse_proxies_to_the_backend() -> None:
    assert caddyfile(proxy_site("127.0.0.1:9000"), port=8080) == (
        "{\n\tadmin off\n\tauto_https off\n}\n\n"
        "http://127.0.0.1:8080 {\n\treverse_proxy 127.0.0.1:9000\n}\n"
    )


def test_gateway_proxy_route_sends_every_path_to_the_backend(tmp_path: Path) -> None:
    text = gateway_config(
        proxy_site("127.0.0.1:9000"), port=8080, workers=2, capacity=2256, workdir=tmp_path
    )
    assert orjson.loads(text)["routes"] == [
        {
            "name": "app",
            "match": {"path_prefix": "/"},
            "proxy": {"upstreams": ["http://127.0.0.1:9000"]},
        }
    ]
    [route] = parse_config(text.encode(), env={}).routes
    assert route.proxy is not None
    assert (route.proxy.weighted, route.proxy.policy) == (
        (("http://127.0.0.1:9000", 1),),
        "round_robin",
    )


def test_static_sites_serve_one_root_with_each_servers_file_serving() -> None:
    site = static_site(Path("/w/files"))
    assert site.nginx_locations == (
        "sendfile on;\n"
        "        open_file_cache max=1000 inactive=20s;\n"
        "        location / { root /w/files; }"
    )
    assert caddyfile(site, port=8080) == (
        "{\n\tadmin off\n\tauto_https off\n}\n\n"
        "http://127.0.0.1:8080 {\n\troot * /w/files\n\tfile_server\n}\n"
    )
    assert site.gateway_routes == (
        {"name": "files", "match": {"path_prefix": "/"}, "static": {"root": "/w/files"}},
    )


def test_gateway_accepts_the_static_route_with_default_cache_limits(tmp_path: Path) -> None:
    text = gateway_config(
        static_site(tmp_path), port=8080, workers=2, capacity=306, workdir=tmp_path
    )
    [route] = parse_config(text.encode(), env={}).routes
    assert route.static is not None
    assert route.static.root == str(tmp_path)
    # The 1 MiB file is exactly at the cap, so static_1m is served from memory too.
    assert route.static.cache.max_file_bytes == FILES["1m.bin"] == 1024 * 1024


def test_backend_answers_the_small_body_from_memory_and_files_from_disk() -> None:
    assert backend_site(Path("/w/files"), "hi\n", "kept\n").nginx_locations == (
        "sendfile on;\n"
        "        open_file_cache max=1000 inactive=20s;\n"
        '        location = /small { return 200 "hi\\n"; }\n'
        '        location = /cacheable { add_header Cache-Control "public, max-age=3600"; '
        'return 200 "kept\\n"; }\n'
        "        location ~ \\.json$ { root /w/files; types { } default_type application/json; }\n"
        "        location / { root /w/files; }"
    )


def test_fixture_files_are_the_same_bytes_every_run_and_differ_by_name() -> None:
    small, large = file_bytes("1k.bin"), file_bytes("1m.bin")
    assert (len(small), len(large)) == (1024, 1024 * 1024)
    assert file_bytes("1m.bin") == large
    assert large[:1024] != small
    assert large[: 512 * 1024] != large[512 * 1024 :]  # no repeated half to hide a wrong offset
    api = file_bytes("10k.json")  # an API answer: valid JSON that compresses like one
    assert len(api) == 10 * 1024 and isinstance(json.loads(api), list)
    assert len(gzip.compress(api)) < len(api) / 3


async def test_prepared_writes_every_file_readable_by_nginx_workers(tmp_path: Path) -> None:
    no_tools = Tools(wrk="", nginx="", caddy="", h2load="")  # nothing is started without a backend
    async with prepared(
        tmp_path / "shared", backend=False, tools=no_tools, workers=1, capacity=300
    ) as fixtures:
        tls = tmp_path / "shared" / "tls"
        certificate = (str(tls / "cert.pem"), str(tls / "key.pem"))
        assert fixtures == Fixtures(tmp_path / "shared" / "files", certificate=certificate)
        cert = x509.load_pem_x509_certificate((tls / "cert.pem").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        for name in FILES:
            path = fixtures.files / name
            assert path.read_bytes() == file_bytes(name)
            assert path.stat().st_mode & 0o777 == 0o644
        assert fixtures.files.stat().st_mode & 0o777 == 0o755


async def test_backend_serves_the_exact_bytes_the_proxy_scenarios_expect() -> None:
    # The run's own directory: pytest's tmp_path is private, and nginx's workers may not be us.
    with work_directory() as tmp:
        async with prepared(
            tmp / "shared", backend=True, tools=find_tools(), workers=1, capacity=300
        ) as fixtures:
            assert fixtures.backend is not None
            base = f"http://{fixtures.backend}"
            for name in ("proxy_small", "proxy_1m"):
                scenario = BY_NAME[name]
                answer = await fetch(base + scenario.path)
                assert (answer.status, answer.body) == (200, scenario.expected_body)
            assert BY_NAME["proxy_small"].expected_body == BACKEND_BODY.encode()
            # One byte off in a 1 MiB body is a mismatch, not a pass.
            wrong = bytearray(file_bytes("1m.bin"))
            wrong[-1] ^= 1
            mismatch = await answer_mismatch(base + "/1m.bin", expected=bytes(wrong))
            assert mismatch is not None and mismatch.startswith("answer check: GET")


def test_capacity_doubles_for_proxies_whose_requests_also_hold_an_upstream_connection() -> None:
    assert capacity(50) == 306
    assert capacity(1000, proxied=True) == 2256


def test_scenario_clients_follow_the_run_unless_the_scenario_sets_its_own() -> None:
    settings = Settings(duration=1, connections=64, workers=2, rounds=1, idle_connections=500)
    assert BY_NAME["proxy_small"].clients(settings) == 64
    assert BY_NAME["proxy_small_c1000"].clients(settings) == 1000
    assert BY_NAME["idle_10k"].clients(settings) == 500
    assert {name for name, s in BY_NAME.items() if s.backend} == {
        "proxy_small",
        "proxy_visitor",
        "proxy_experiment",
        "proxy_middleware",
        "proxy_small_c1000",
        "proxy_1m",
        "proxy_cached",
        "proxy_cached_c1000",
        "proxy_https",
        "proxy_h2",
    }


def _proxy_outcome(gateway: LoadResult, nginx: LoadResult, caddy: LoadResult) -> ScenarioOutcome:
    servers = zip(("gateway", "nginx", "caddy"), (gateway, nginx, caddy), strict=True)
    return ScenarioOutcome(
        "proxy_small", servers=tuple(ServerSummary(s, r, 1, ()) for s, r in servers)
    )


def _gateway_outcome(name: str, requests_per_s: float) -> ScenarioOutcome:
    result = LoadResult(requests_per_s, 1.0, 2.0, 0, 1.0, 80.0)
    return ScenarioOutcome(name, servers=(ServerSummary("gateway", result, 1, ()),))


def _target_rows(outcomes: list[ScenarioOutcome], scenario: str) -> list[TargetRow]:
    return [row for row in evaluate(outcomes, SETTINGS) if row.scenario == scenario]


def test_redirect_target_compares_with_the_gateways_hello_in_the_same_run() -> None:
    hello = _gateway_outcome("hello", 30000.0)
    goal = "redirect ≥ 0.75x hello world"
    rows = [
        row
        for redirect in (22500.0, 22000.0)
        for row in _target_rows([hello, _gateway_outcome("redirect", redirect)], "redirect")
    ]
    assert rows == [
        TargetRow(goal, "redirect", "0.75x hello", True),
        TargetRow(goal, "redirect", "0.73x hello", False),
    ]


def test_tracker_target_needs_half_of_hello_and_a_p50_of_3_ms() -> None:
    hello = _gateway_outcome("hello", 30000.0)
    goal = "durable tracker POST ≥ 0.5x hello world, p50 ≤ 3 ms"
    rows = []
    for requests, p50 in ((15000.0, 3.0), (15000.0, 3.1), (14000.0, 1.0)):
        tracker = ScenarioOutcome(
            "tracker_post",
            servers=(
                ServerSummary("gateway", LoadResult(requests, p50, 9.0, 0, 1.0, 80.0), 1, ()),
            ),
        )
        rows += _target_rows([hello, tracker], "tracker_post")
    assert rows == [
        TargetRow(goal, "tracker_post", "0.50x hello, p50 3.00 ms", True),
        TargetRow(goal, "tracker_post", "0.50x hello, p50 3.10 ms", False),
        TargetRow(goal, "tracker_post", "0.47x hello, p50 1.00 ms", False),
    ]


def test_segment_target_compares_events_in_kafka_with_hellos_requests() -> None:
    hello = _gateway_outcome("hello", 30000.0)
    goal = "durable Segment batch of 100: events/s ≥ 4x hello's requests/s"
    rows = []
    for events_per_s, shortfall in ((120_000.0, 0), (119_000.0, 0), (130_000.0, 5)):
        delivered = Delivery(1_000_000, 1_000_000 - shortfall, shortfall, events_per_s, 0.1, 0.3)
        result = LoadResult(1200.0, 40.0, 80.0, 0, 1.9, 120.0, delivered)
        batch = ScenarioOutcome("segment_batch", servers=(ServerSummary("gateway", result, 1, ()),))
        rows += _target_rows([hello, batch], "segment_batch")
    assert rows == [
        TargetRow(goal, "segment_batch", "events/s 4.00x hello's req/s", True),
        TargetRow(goal, "segment_batch", "events/s 3.97x hello's req/s", False),
        TargetRow(goal, "segment_batch", "events/s 4.33x hello's req/s, 5 events missing", False),
    ]


def test_proxy_target_needs_throughput_against_caddy_and_a_p99_within_caddys() -> None:
    nginx = LoadResult(20000.0, 1.0, 2.0, 0, 1.0, 10.0)
    caddy = LoadResult(6000.0, 3.0, 9.0, 0, 1.0, 40.0)
    met = _proxy_outcome(LoadResult(7800.0, 2.0, 9.0, 0, 1.0, 100.0), nginx, caddy)
    slow_tail = _proxy_outcome(LoadResult(10000.0, 2.0, 9.5, 0, 1.0, 100.0), nginx, caddy)
    slow = _proxy_outcome(LoadResult(7700.0, 2.0, 8.0, 0, 1.0, 100.0), nginx, caddy)
    rows = [evaluate([outcome], SETTINGS)[0] for outcome in (met, slow_tail, slow)]
    goal = "proxy ≥ 1.3x Caddy, p99 ≤ Caddy's"
    assert rows == [
        TargetRow(goal, "proxy_small", "1.30x Caddy, p99 9.00 vs 9.00 ms Caddy", True),
        TargetRow(goal, "proxy_small", "1.67x Caddy, p99 9.50 vs 9.00 ms Caddy", False),
        TargetRow(goal, "proxy_small", "1.28x Caddy, p99 8.00 vs 9.00 ms Caddy", False),
    ]


def test_cached_proxy_targets_compare_with_caddy_proxying_and_the_gateways_static_file() -> None:
    static = _gateway_outcome("static_1k", 20000.0)
    rows = []
    for gateway in (26000.0, 19800.0):
        cached = ScenarioOutcome(
            "proxy_cached",
            servers=(
                ServerSummary("gateway", LoadResult(gateway, 1.0, 2.0, 0, 1.0, 90.0), 1, ()),
                ServerSummary("caddy", LoadResult(15000.0, 2.0, 4.0, 0, 1.0, 40.0), 1, ()),
            ),
        )
        rows += _target_rows([static, cached], "proxy_cached")
    caddy, static_goal = (
        "cached proxy ≥ 1.3x Caddy's proxying",
        ("cached proxy ≥ 1.0x the gateway's own static 1 KiB"),
    )
    assert rows == [
        TargetRow(caddy, "proxy_cached", "1.73x Caddy", True),
        TargetRow(static_goal, "proxy_cached", "1.30x static_1k", True),
        TargetRow(caddy, "proxy_cached", "1.32x Caddy", True),
        TargetRow(static_goal, "proxy_cached", "0.99x static_1k", False),
    ]
    assert _target_rows([cached], "proxy_cached")[1].measured == "static_1k not run"


def test_enrichment_targets_compare_the_same_visitor_mix_with_and_without_it() -> None:
    def pixel(name: str, requests: float, cores: float) -> ScenarioOutcome:
        result = LoadResult(requests, 1.0, 2.0, 0, cores, 90.0)
        return ScenarioOutcome(name, servers=(ServerSummary("gateway", result, 1, ()),))

    rows = _target_rows(
        [pixel("pixel_mix", 10000.0, 1.5), pixel("pixel_enriched", 9100.0, 1.45)],
        "pixel_enriched",
    )
    assert [(row.measured, row.met) for row in rows] == [
        ("0.91x pixel_mix", True), ("+9.3 µs/req over pixel_mix", True),
    ]  # fmt: skip
    slow = _target_rows(
        [pixel("pixel_mix", 10000.0, 1.5), pixel("pixel_enriched", 8000.0, 1.5)],
        "pixel_enriched",
    )
    assert [(row.measured, row.met) for row in slow] == [
        ("0.80x pixel_mix", False), ("+37.5 µs/req over pixel_mix", False),
    ]  # fmt: skip


MACHINE = Machine(
    date="2026-11-25 18:00 UTC",
    cpus=2,
    cpu_model="AMD EPYC",
    kernel="Linux 6.18",
    python="3.11.7",
    aiohttp="3.14.5",
    uvloop="0.23.0",
    gateway="0.1.0",
    nginx="nginx version: nginx/1.22.1",
    caddy="2.6.2",
    wrk="wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer",
)
SETTINGS = Settings(duration=5, connections=50, workers=2, rounds=3, idle_connections=10_000)
OUTCOMES = [
    ScenarioOutcome(
        "hello",
        servers=(
            ServerSummary("gateway", LoadResult(34712.4, 1.214, 1.89, 0, 1.02, 75.34), 3, ()),
            ServerSummary("nginx", LoadResult(100123.0, 0.3, 0.81, 0, 0.96, 10.7), 3, ()),
            ServerSummary("caddy", LoadResult(55000.0, 0.69, 4.37, 2, 1.5, 37.9), 3, ()),
        ),
    ),
    ScenarioOutcome(
        "proxy_small_c1000",
        servers=(
            ServerSummary("gateway", LoadResult(9000.0, 90.0, 300.0, 0, 1.8, 140.0), 3, ()),
            ServerSummary("nginx", LoadResult(20000.0, 45.0, 80.0, 0, 0.9, 20.4), 3, ()),
            ServerSummary("caddy", LoadResult(5000.0, 150.0, 400.0, 12, 1.5, 160.9), 3, ()),
        ),
    ),
    ScenarioOutcome(
        "pixel",
        servers=(
            ServerSummary(
                "gateway",
                LoadResult(
                    32000.0, 1.3, 2.1, 0, 1.5, 80.0, Delivery(160000, 160049, 0, 31959.9, 0.0, 0.08)
                ),
                3,
                (),
            ),
            ServerSummary("nginx", LoadResult(120000.0, 0.2, 0.9, 0, 0.9, 10.8), 3, ()),
            ServerSummary("caddy", LoadResult(50000.0, 0.8, 5.0, 0, 1.3, 38.0), 3, ()),
            ServerSummary("nginx_log", LoadResult(100000.0, 0.25, 1.0, 0, 0.95, 11.2), 3, ()),
        ),
    ),
    ScenarioOutcome(
        "tracker_post",
        servers=(
            ServerSummary(
                "gateway",
                LoadResult(
                    28000.0, 1.6, 3.0, 0, 1.6, 85.0, Delivery(140000, 139997, 3, 27999.4, 0.0, 0.2)
                ),
                3,
                (),
            ),
            ServerSummary("nginx", LoadResult(100000.0, 0.2, 0.9, 0, 0.9, 10.8), 3, ()),
            ServerSummary("caddy", LoadResult(45000.0, 0.9, 5.0, 0, 1.2, 38.0), 3, ()),
        ),
    ),
    ScenarioOutcome(
        "segment_batch",
        servers=(
            ServerSummary(
                "gateway",
                LoadResult(
                    1100.0,
                    40.0,
                    80.0,
                    0,
                    1.9,
                    120.0,
                    Delivery(550000, 555000, 0, 110000.0, 0.5, 0.4),
                ),
                3,
                (),
            ),
            ServerSummary("nginx", LoadResult(60000.0, 0.4, 1.2, 0, 0.9, 10.9), 3, ()),
            ServerSummary("caddy", LoadResult(35000.0, 1.1, 6.0, 0, 1.2, 39.0), 3, ()),
        ),
    ),
    ScenarioOutcome("redirect", skipped="redirect handler not built yet"),
    ScenarioOutcome(
        "idle_10k",
        servers=(
            ServerSummary("gateway", IdleResult(9.6, 10_000, 0, 244.9), 3, ()),
            ServerSummary("nginx", IdleResult(0.5, 10_000, 0, 27.8), 3, ()),
            ServerSummary("caddy", None, 3, ("caddy did not answer within 20s",) * 3),
        ),
    ),
    ScenarioOutcome(
        "worker_rss", servers=(ServerSummary("gateway", FootprintResult(52.3, 47.1, 2), 3, ()),)
    ),
]

EXPECTED_REPORT = """\
# Gateway benchmarks, 2026-11-25 18:00 UTC

| Machine |  |
| --- | --- |
| CPU | AMD EPYC (2 CPUs) |
| Kernel | Linux 6.18 |
| Python | 3.11.7 |
| aiohttp | 3.14.5 |
| uvloop | 0.23.0 |
| gateway | 0.1.0 |
| nginx | nginx version: nginx/1.22.1 |
| Caddy | 2.6.2 |
| wrk | wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer |

## Settings

- load: 5 s per run, `wrk -t1 -c50 --latency`
- workers: 2 per server (gateway workers, nginx worker_processes, Caddy GOMAXPROCS)
- rounds: 3, the servers alternating within each round; medians reported, errors summed \
over rounds
- idle_10k: 10,000 keep-alive connections per server
- broker: Apache Kafka (single-node KRaft, tests/kafka/pom.xml), started fresh for each \
tracking run; its CPU is in the event table, not in the gateway's columns
- proxy_small_c1000: `wrk -t1 -c1000`
- proxy_small_c1000: every server proxies to one nginx backend started per scenario \
(worker_processes 2, on this machine); its CPU and memory are not in the server's columns

## Results

| Scenario | Server | Requests/s | p50 (ms) | p99 (ms) | Errors | CPU (cores) | CPU µs/req \
| Peak RSS (MiB) |
| --- | --- | --: | --: | --: | --: | --: | --: | --: |
| hello | gateway | 34,712 | 1.21 | 1.89 | 0 | 1.02 | 29 | 75.3 |
| hello | nginx | 100,123 | 0.30 | 0.81 | 0 | 0.96 | 10 | 10.7 |
| hello | Caddy | 55,000 | 0.69 | 4.37 | 2 | 1.50 | 27 | 37.9 |
| proxy_small_c1000 | gateway | 9,000 | 90.00 | 300.00 | 0 | 1.80 | 200 | 140.0 |
| proxy_small_c1000 | nginx | 20,000 | 45.00 | 80.00 | 0 | 0.90 | 45 | 20.4 |
| proxy_small_c1000 | Caddy | 5,000 | 150.00 | 400.00 | 12 | 1.50 | 300 | 160.9 |
| pixel | gateway | 32,000 | 1.30 | 2.10 | 0 | 1.50 | 47 | 80.0 |
| pixel | nginx | 120,000 | 0.20 | 0.90 | 0 | 0.90 | 8 | 10.8 |
| pixel | Caddy | 50,000 | 0.80 | 5.00 | 0 | 1.30 | 26 | 38.0 |
| pixel | nginx+log | 100,000 | 0.25 | 1.00 | 0 | 0.95 | 10 | 11.2 |
| tracker_post | gateway | 28,000 | 1.60 | 3.00 | 0 | 1.60 | 57 | 85.0 |
| tracker_post | nginx | 100,000 | 0.20 | 0.90 | 0 | 0.90 | 9 | 10.8 |
| tracker_post | Caddy | 45,000 | 0.90 | 5.00 | 0 | 1.20 | 27 | 38.0 |
| segment_batch | gateway | 1,100 | 40.00 | 80.00 | 0 | 1.90 | 1,727 | 120.0 |
| segment_batch | nginx | 60,000 | 0.40 | 1.20 | 0 | 0.90 | 15 | 10.9 |
| segment_batch | Caddy | 35,000 | 1.10 | 6.00 | 0 | 1.20 | 34 | 39.0 |
| redirect | — | skipped: redirect handler not built yet |  |  |  |  |  |  |
| idle_10k | gateway | — | — | — | 0 | — | — | 244.9 |
| idle_10k | nginx | — | — | — | 0 | — | — | 27.8 |
| idle_10k | Caddy | failed |  |  |  |  |  |  |
| worker_rss | gateway | — | — | — | 0 | — | — | 52.3 |

- idle_10k, Caddy: 3 of 3 runs failed: caddy did not answer within 20s
- CPU µs/req = the server's cores x 10^6 / requests/s: its CPU per request, comparable \
across machines of different speeds.
- idle rows: Errors = connections that could not be opened; Peak RSS = the server's RSS \
with every connection open.
- worker_rss: Peak RSS = the largest of 2 idle workers (supervisor 47.1 MiB), serving \
config.json.

## Event delivery (gateway)

| Scenario | Delivery | Requests/s | vs hello | Expected | Delivered | Shortfall | Drain \
(s) | Events/s | Events/s per worker | CPU µs/event | Broker CPU (cores) |
| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |
| pixel | fast | 32,000 | 0.92x | 160,000 | 160,049 | 0 | 0.0 | 31,960 | 15,980 | 46.9 | \
0.08 |
| tracker_post | durable | 28,000 | 0.81x | 140,000 | 139,997 | 3 | 0.0 | 27,999 | 14,000 | \
57.1 | 0.20 |
| segment_batch | durable | 1,100 | 0.03x | 550,000 | 555,000 | 0 | 0.5 | 110,000 | 55,000 \
| 17.3 | 0.40 |

- durable: the answer waits until Kafka acknowledged the event; fast: it is answered once \
enqueued (pixels always are).
- Expected = 2xx/3xx answers x events per request, as wrk counted them; requests in flight \
when wrk stops (up to one per connection) are answered but not counted, so Delivered may \
exceed Expected by that much, and a loss smaller than it would not show.
- Shortfall = answered but not in Kafka once the count stopped growing (at most 10 s after \
the load); a durable row must show 0.
- Events/s = Delivered / (load + Drain); Drain = seconds from the end of the load until the \
last event reached Kafka. The broker (Apache Kafka (single-node KRaft, tests/kafka/pom.xml), \
fresh per run) shares the machine's cores with the gateway.
- CPU µs/event = the gateway's cores x 10^6 / events answered per second (requests/s x \
events per request): the serving processes' CPU per event, answering included.

## Ratios

| Scenario | Measure | gateway | nginx | Caddy | nginx+log | gateway/nginx | gateway/Caddy \
| gateway/nginx+log |
| --- | --- | --: | --: | --: | --: | --: | --: | --: |
| hello | requests/s | 34,712 | 100,123 | 55,000 | — | 0.35x | 0.63x | — |
| proxy_small_c1000 | requests/s | 9,000 | 20,000 | 5,000 | — | 0.45x | 1.80x | — |
| pixel | requests/s | 32,000 | 120,000 | 50,000 | 100,000 | 0.27x | 0.64x | 0.32x |
| tracker_post | requests/s | 28,000 | 100,000 | 45,000 | — | 0.28x | 0.62x | — |
| segment_batch | requests/s | 1,100 | 60,000 | 35,000 | — | 0.02x | 0.03x | — |
| redirect | skipped: redirect handler not built yet |  |  |  |  |  |  |  |
| idle_10k | KiB per idle connection | 9.6 | 0.5 | — | — | 19.20x | — | — |
| worker_rss | MiB per idle worker | 52.3 | — | — | — | — | — | — |

## Targets (reported, not asserted)

| Target | Scenario | Measured | Met |
| --- | --- | --- | --- |
| proxy ≥ 1.3x Caddy, p99 ≤ Caddy's | proxy_small | proxy_small not run | — |
| proxy ≥ 1.3x Caddy, p99 ≤ Caddy's | proxy_small_c1000 | 1.80x Caddy, p99 300.00 vs 400.00 \
ms Caddy | yes |
| proxy ≥ 1.3x Caddy, p99 ≤ Caddy's | proxy_1m | proxy_1m not run | — |
| cached proxy ≥ 1.3x Caddy's proxying | proxy_cached | proxy_cached not run | — |
| cached proxy ≥ 1.0x the gateway's own static 1 KiB | proxy_cached | proxy_cached not run \
| — |
| a proxied request in an experiment ≤ 10 µs more CPU than outside it | proxy_experiment \
| proxy_experiment not run | — |
| static 1 KiB ≥ 1.0x Caddy | static_1k | static_1k not run | — |
| pixel ≥ 0.75x hello world | pixel | 0.92x hello | yes |
| pixel ≥ 0.3x nginx+log (nginx answering and recording each hit) | pixel | 0.32x nginx+log \
| yes |
| enriched pixel ≥ 0.9x the same visitor mix without enrichment | pixel_enriched | \
pixel_enriched not run | — |
| enrichment (every step, warm) ≤ 10 µs CPU per event | pixel_enriched | pixel_enriched \
not run | — |
| durable tracker POST ≥ 0.5x hello world, p50 ≤ 3 ms | tracker_post | 0.81x hello, p50 \
1.60 ms, 3 events missing | no |
| durable Segment batch of 100: events/s ≥ 4x hello's requests/s | segment_batch | events/s \
3.17x hello's req/s | no |
| ≥ 50k events/s per worker via batch | intake_batch | intake_batch not run | — |
| ≥ 50k events/s per worker via batch | snowplow_tp2 | snowplow_tp2 not run | — |
| redirect ≥ 0.75x hello world | redirect | skipped | — |
| ≤ 50 KiB RSS per idle connection | idle_10k | 9.6 KiB | yes |
| idle worker ≤ 45 MiB RSS with the shipped config | worker_rss | 52.3 MiB | no |
"""


def test_report_renders_every_section_exactly() -> None:
    assert render(MACHINE, SETTINGS, OUTCOMES) == EXPECTED_REPORT


def test_report_has_no_event_section_when_no_scenario_tracked() -> None:
    untracked = [outcome for outcome in OUTCOMES if outcome.name in ("hello", "idle_10k")]
    assert events_section(untracked, SETTINGS) == ""
    assert "## Event delivery" not in render(MACHINE, SETTINGS, untracked)


def test_missing_tools_are_named_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("benchmarks.machine._SBIN", str(tmp_path))
    assert main(["--out", "-"]) == 1
    assert capsys.readouterr().err == (
        "benchmarks: missing wrk, nginx, caddy, h2load, varnishd "
        "(install with: sudo apt-get install wrk nginx-light caddy nghttp2-client varnish)\n"
    )


def _rows(report: str, scenario: str) -> dict[str, list[str]]:
    """Results-table cells by server for one scenario (the first table row per server)."""
    rows: dict[str, list[str]] = {}
    for cells in _table_rows(report.split("## Results")[1].split("\n## ")[0], scenario):
        rows.setdefault(cells[1].lower(), cells[2:])
    return rows


SMOKE_SCENARIOS = (
    "hello", "proxy_small", "proxy_cached", "static_1k", "pixel", "tracker_post", "segment_batch",
    "intake_batch", "snowplow_tp2", "redirect", "hello_https_new", "idle_10k", "worker_rss",
)  # fmt: skip
LOADED = (
    "hello", "proxy_small", "proxy_cached", "static_1k", "pixel", "tracker_post", "segment_batch",
    "intake_batch", "snowplow_tp2", "redirect", "hello_https_new",
)  # fmt: skip
TRACKED = {
    "pixel": "fast",
    "tracker_post": "durable",
    "segment_batch": "durable",
    "intake_batch": "durable",
    "snowplow_tp2": "durable",
    "redirect": "fast",
}


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real ``--smoke`` run shared by the tests below: every server, a fresh Apache
    Kafka for each tracking run."""
    out = tmp_path_factory.mktemp("smoke") / "report.md"
    command = [sys.executable, "-m", "benchmarks", "--smoke", "--workers", "1", "--out", str(out)]
    # 1 s loads keep the module near a minute; every body is still checked before each load.
    command += ["--duration", "1", "--scenarios", ",".join(SMOKE_SCENARIOS)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    report = out.read_text()
    assert done.stdout == report
    return report


def _table_rows(section: str, scenario: str, column: int = 0) -> list[list[str]]:
    """The cells of every table row in ``section`` whose ``column`` names ``scenario``."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [row for row in rows if row[column] == scenario]


@pytest.mark.timeout(260)
def test_smoke_run_loads_every_server_in_every_scenario(smoke_report: str) -> None:
    report = smoke_report
    # A wrong status, body or Location in any answer check fails its run, and the command.
    for scenario in LOADED:
        rows = _rows(report, scenario)
        recorded = {"nginx+log"} if scenario in ("pixel", "tracker_post", "redirect") else set()
        caching = {"varnish"} if scenario == "proxy_cached" else set()
        assert set(rows) == {"gateway", "nginx", "caddy", *recorded, *caching}, scenario
        for server, cells in rows.items():
            assert float(cells[0].replace(",", "")) > 0, (scenario, server)
            assert cells[3] == "0", (scenario, server)  # errors

    ratios = report.split("## Ratios")[1].split("## Targets")[0]
    [idle] = _table_rows(ratios, "idle_10k")
    assert idle[1] == "KiB per idle connection"
    for cell in idle[2:5]:  # gateway, nginx, Caddy: each a number, not "—"
        float(cell)
    [footprint] = _table_rows(ratios, "worker_rss")
    assert footprint[1] == "MiB per idle worker"
    assert 10 < float(footprint[2]) < 1000  # the gateway alone: the peers' cells are "—"
    assert footprint[3:6] == ["—"] * 3


@pytest.mark.timeout(260)
def test_smoke_run_finds_every_answered_event_in_kafka(smoke_report: str) -> None:
    events = smoke_report.split("## Event delivery (gateway)")[1].split("## Ratios")[0]
    for scenario, mode in TRACKED.items():
        [row] = _table_rows(events, scenario)
        expected, delivered, shortfall = (int(cell.replace(",", "")) for cell in row[4:7])
        assert row[1] == mode
        assert expected > 0, scenario
        assert delivered >= expected, scenario
        assert shortfall == 0, scenario
    targets = smoke_report.split("## Targets")[1]
    for scenario in TRACKED:
        rows = _table_rows(targets, scenario, column=1)
        assert len(rows) == (2 if scenario == "pixel" else 1)  # pixel: vs hello, vs nginx+log
        for row in rows:
            assert row[3] in ("yes", "no"), row  # measured; whether met depends on the machine
