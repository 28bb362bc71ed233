"""The peers beside nginx and Caddy: nginx+log recording every hit, and the gateway as shipped."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import orjson

from benchmarks.configs import (
    NGINX_EVENTS_LOG,
    SHIPPED_CONFIG,
    nginx_config,
    pixel_site,
    respond_site,
    shipped_config,
    shipped_site,
    tracker_site,
)
from benchmarks.fixtures import Fixtures, work_directory
from benchmarks.machine import find_tools
from benchmarks.probe import fetch
from benchmarks.procstat import sample_tree
from benchmarks.runner import servers_of
from benchmarks.scenarios import BY_NAME, NGINX_EMPTY_GIF
from benchmarks.servers import running
from gateway.config import parse_config

FIXTURES = Fixtures(Path("/unused"), backend="127.0.0.1:9", redis="redis://127.0.0.1:9/0")


def test_only_scenarios_with_a_recording_site_get_the_nginx_log_peer() -> None:
    recorded = {
        name for name, scenario in BY_NAME.items() if "nginx_log" in servers_of(scenario, FIXTURES)
    }
    assert recorded == {
        "pixel", "pixel_mix", "pixel_enriched", "tracker_post", "tracker_post_fast", "redirect",
    }  # fmt: skip
    assert servers_of(BY_NAME["hello"], FIXTURES) == ("gateway", "nginx", "caddy")
    assert servers_of(BY_NAME["worker_rss"], FIXTURES) == ("gateway",)
    # nginx+log answers what nginx answers: the pixel is nginx's own GIF.
    assert BY_NAME["pixel"].expected_body_for("nginx_log") == NGINX_EMPTY_GIF


def test_the_recording_config_logs_buffered_json_lines_and_loads_the_echo_module() -> None:
    prefix = Path("/w/nginx")
    config = nginx_config(
        tracker_site("durable"), port=8080, workers=2, capacity=306, prefix=prefix, recording=True
    )
    assert config.startswith("load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;\n")
    assert 'log_format events escape=json \'{"event_id":"$request_id",' in config
    assert f"access_log {prefix / NGINX_EVENTS_LOG} events buffer=64k flush=1s;" in config
    assert "location / { echo_read_request_body; echo_status 204; }" in config
    plain = nginx_config(tracker_site("durable"), port=8080, workers=2, capacity=306, prefix=prefix)
    assert "load_module" not in plain and "log_format" not in plain
    assert "location / { return 204; }" in plain


async def test_nginx_log_answers_like_nginx_and_records_every_request_as_json() -> None:
    tools = find_tools()
    with work_directory() as tmp:
        records: list[dict[str, str]] = []
        for name, site in (("pixel", pixel_site()), ("tracker", tracker_site("durable"))):
            workdir = tmp / name
            workdir.mkdir()
            async with running(
                "nginx_log", site, workers=1, capacity=300, tools=tools, workdir=workdir
            ) as server:
                if name == "pixel":
                    answer = await fetch(
                        server.url("/img/v1/campaign/c1?e=open&q=%22x%22"),
                        headers={"User-Agent": 'Mail "client"', "Referer": "https://m.example/"},
                    )
                    assert (answer.status, answer.body) == (200, NGINX_EMPTY_GIF)
                    assert answer.headers["cache-control"] == "no-store"
                else:
                    body = b'{"event":"signup","properties":{"plan":"pro \\"x\\""}}'
                    answer = await fetch(
                        server.url("/tr/v1/src/bench"),
                        method="POST",
                        body=body,
                        headers={"Content-Type": "application/json"},
                    )
                    assert (answer.status, answer.body) == (204, b"")
            # Stopping nginx flushes its 64 KiB log buffer.
            lines = (workdir / "nginx" / NGINX_EVENTS_LOG).read_bytes().splitlines()
            records += [orjson.loads(line) for line in lines]
    # Besides the readiness probes (GET /), which are recorded too:
    pixel, tracker = (record for record in records if record["path"] != "/")
    assert len(pixel["event_id"]) == 32 and pixel["event_time"].startswith("20")
    assert {k: pixel[k] for k in ("method", "path", "query", "user_agent", "referer")} == {
        "method": "GET",
        "path": "/img/v1/campaign/c1",
        "query": "e=open&q=%22x%22",
        "user_agent": 'Mail "client"',
        "referer": "https://m.example/",
    }
    assert (pixel["ip"], pixel["status"], pixel["body"]) == ("127.0.0.1", "200", "")
    assert (tracker["method"], tracker["path"], tracker["status"]) == (
        "POST",
        "/tr/v1/src/bench",
        "204",
    )
    assert json.loads(tracker["body"]) == {"event": "signup", "properties": {"plan": 'pro "x"'}}
    assert tracker["content_type"] == "application/json"


def test_the_shipped_config_keeps_everything_but_its_ports_and_spool(tmp_path: Path) -> None:
    text = shipped_config(SHIPPED_CONFIG, ports=itertools.count(9000), workdir=tmp_path)
    ours, theirs = json.loads(text), json.loads(SHIPPED_CONFIG.read_text())
    assert [listener["port"] for listener in ours["server"]["listeners"]] == [9000, 9001]
    assert ours["spool"] == {**theirs["spool"], "dir": str(tmp_path / "spool")}
    for section in ours["server"]["listeners"], theirs["server"]["listeners"]:
        for listener in section:
            del listener["port"]
    del ours["spool"], theirs["spool"]
    assert ours == theirs
    parse_config(text.encode(), env={})  # still a valid config


def mapped_files(pid: int) -> str:
    """The files a process has mapped (its shared libraries among them), as /proc lists them."""
    return Path(f"/proc/{pid}/maps").read_text()


async def test_the_footprint_run_starts_the_shipped_gateway_and_reads_its_workers() -> None:
    tools = find_tools()
    with work_directory() as tmp:
        async with running(
            "gateway", shipped_site(), workers=1, capacity=300, tools=tools, workdir=tmp
        ) as server:
            answer = await fetch(server.url("/"))
            assert (answer.status, answer.body) == (200, b"Hello from the gateway\n")
            workers = [pid for pid in sample_tree(server.pid).processes if pid != server.pid]
            for pid in workers:
                # The shipped config has no Kafka, TLS or Redis: their native code is not
                # loaded (the worker's memory; tests/layout checks the Python side).
                maps = mapped_files(pid)
                assert "cryptography" not in maps and "aiokafka" not in maps, pid
                assert "hiredis" not in maps, pid
            # The shipped config sets no worker count: one per CPU, whatever the run's budget.
            assert (
                len(workers)
                == parse_config(SHIPPED_CONFIG.read_bytes(), env={}).server.worker_count
            )
    assert respond_site("x").config_file is None


def test_the_enriched_pixel_turns_every_step_on_for_a_mix_of_visitors(tmp_path: Path) -> None:
    from benchmarks.configs import gateway_config
    from benchmarks.enrichment import MIX_SIZE, user_agents

    mixed, enriched = BY_NAME["pixel_mix"], BY_NAME["pixel_enriched"]
    assert mixed.mix == enriched.mix and len(enriched.mix) == MIX_SIZE
    assert 250 <= len({fields["User-Agent"] for fields in enriched.mix}) <= len(user_agents())
    assert len({fields["X-Forwarded-For"] for fields in enriched.mix}) > 2000
    script = enriched.wrk_script or ""
    assert script.count("X-Forwarded-For") == MIX_SIZE
    assert 'requests[n] = wrk.format("GET", "/img/v1/campaign/c1/ename/open", fields, nil)' in (
        script
    )
    configs = {}
    for scenario in (mixed, enriched):
        assert scenario.site is not None
        text = gateway_config(scenario.site(FIXTURES), port=8080, workers=1, capacity=100,
                              workdir=tmp_path)  # fmt: skip
        configs[scenario.name] = parse_config(text.encode(), env={})  # checks the databases
    assert configs["pixel_mix"].tracking.enrich is None
    enrich = configs["pixel_enriched"].tracking.enrich
    assert enrich is not None and [step for step in ("device", "bots", "geo", "campaign",
        "referrer", "ip", "consent", "pii") if getattr(enrich, step) is None] == []  # fmt: skip
    assert configs["pixel_enriched"].server.trusted_proxies == ("127.0.0.1/32",)
