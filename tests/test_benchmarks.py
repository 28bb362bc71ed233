"""The benchmark suite: wrk parsing, /proc maths, report layout, and one real smoke run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.configs import caddy_quote, nginx_quote
from benchmarks.load import WrkError, WrkStats, parse_wrk, to_ms, wrk_command
from benchmarks.machine import Machine
from benchmarks.outcomes import (
    Failure,
    IdleResult,
    LoadResult,
    Run,
    ScenarioOutcome,
    ServerSummary,
    ratio,
    summarize,
)
from benchmarks.procstat import CLOCK_TICKS, ProcStat, TreeSample, Usage, descendants, parse_stat
from benchmarks.report import render
from benchmarks.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

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
        non_2xx_3xx=0,
        socket_errors=0,
    )


def test_parse_wrk_counts_non_2xx_3xx_and_every_socket_error() -> None:
    stats = parse_wrk(WRK_WITH_ERRORS)
    assert (stats.non_2xx_3xx, stats.socket_errors, stats.errors) == (67, 52527, 52594)
    assert (stats.requests_per_s, stats.p50_ms, stats.p99_ms) == (31.93, 3.39, 9.47)


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
    ScenarioOutcome("proxy_small", skipped="proxy handler not built yet"),
    ScenarioOutcome(
        "idle_10k",
        servers=(
            ServerSummary("gateway", IdleResult(9.6, 10_000, 0, 244.9), 3, ()),
            ServerSummary("nginx", IdleResult(0.5, 10_000, 0, 27.8), 3, ()),
            ServerSummary("caddy", None, 3, ("caddy did not answer within 20s",) * 3),
        ),
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
- rounds: 3, the servers alternating within each round; medians reported, errors summed over rounds
- idle_10k: 10,000 keep-alive connections per server

## Results

| Scenario | Server | Requests/s | p50 (ms) | p99 (ms) | Errors | CPU (cores) | Peak RSS (MiB) |
| --- | --- | --: | --: | --: | --: | --: | --: |
| hello | gateway | 34,712 | 1.21 | 1.89 | 0 | 1.02 | 75.3 |
| hello | nginx | 100,123 | 0.30 | 0.81 | 0 | 0.96 | 10.7 |
| hello | Caddy | 55,000 | 0.69 | 4.37 | 2 | 1.50 | 37.9 |
| proxy_small | — | skipped: proxy handler not built yet |  |  |  |  |  |
| idle_10k | gateway | — | — | — | 0 | — | 244.9 |
| idle_10k | nginx | — | — | — | 0 | — | 27.8 |
| idle_10k | Caddy | failed |  |  |  |  |  |

- idle_10k, Caddy: 3 of 3 runs failed: caddy did not answer within 20s
- idle rows: Errors = connections that could not be opened; \
Peak RSS = the server's RSS with every connection open.

## Ratios

| Scenario | Measure | gateway | nginx | Caddy | gateway/nginx | gateway/Caddy |
| --- | --- | --: | --: | --: | --: | --: |
| hello | requests/s | 34,712 | 100,123 | 55,000 | 0.35x | 0.63x |
| proxy_small | skipped: proxy handler not built yet |  |  |  |  |  |
| idle_10k | KiB per idle connection | 9.6 | 0.5 | — | 19.20x | — |

## Targets (reported, not asserted)

| Target | Scenario | Measured | Met |
| --- | --- | --- | --- |
| proxy ≥ 1.5x Caddy and ≥ 0.5x nginx | proxy_small | skipped | — |
| proxy ≥ 1.5x Caddy and ≥ 0.5x nginx | proxy_1m | proxy_1m not run | — |
| static 1 KiB ≥ 1.0x Caddy | static_1k | static_1k not run | — |
| pixel ≥ 0.9x hello world | pixel | pixel not run | — |
| durable tracker POST ≥ 0.8x hello world | tracker_post | tracker_post not run | — |
| ≥ 50k events/s per worker via batch | segment_batch | segment_batch not run | — |
| ≤ 50 KiB RSS per idle connection | idle_10k | 9.6 KiB | yes |
"""


def test_report_renders_every_section_exactly() -> None:
    assert render(MACHINE, SETTINGS, OUTCOMES) == EXPECTED_REPORT


def test_missing_tools_are_named_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("benchmarks.machine._SBIN", str(tmp_path))
    assert main(["--out", "-"]) == 1
    assert capsys.readouterr().err == (
        "benchmarks: missing wrk, nginx, caddy "
        "(install with: sudo apt-get install wrk nginx-light caddy)\n"
    )


def _rows(report: str, scenario: str) -> dict[str, list[str]]:
    """Results-table cells by server for one scenario (the first table row per server)."""
    rows: dict[str, list[str]] = {}
    for line in report.split("## Ratios")[0].splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == scenario:
            rows.setdefault(cells[1].lower(), cells[2:])
    return rows


def test_smoke_run_loads_every_server_and_skips_unbuilt_scenarios(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    command = [sys.executable, "-m", "benchmarks", "--smoke", "--workers", "1", "--out", str(out)]
    command += ["--scenarios", "hello,idle_10k,proxy_small"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    report = out.read_text()
    assert done.stdout == report

    hello = _rows(report, "hello")
    assert set(hello) == {"gateway", "nginx", "caddy"}
    for server, cells in hello.items():
        assert float(cells[0].replace(",", "")) > 0, server
        assert cells[3] == "0", server  # errors

    ratios = report.split("## Ratios")[1].split("## Targets")[0]
    idle = [line for line in ratios.splitlines() if line.startswith("| idle_10k |")]
    assert len(idle) == 1
    cells = [cell.strip() for cell in idle[0].strip("|").split("|")]
    assert cells[1] == "KiB per idle connection"
    for cell in cells[2:5]:  # gateway, nginx, Caddy: each a number, not "—"
        float(cell)

    assert _rows(report, "proxy_small") == {
        "—": ["skipped: proxy handler not built yet"] + [""] * 5
    }
