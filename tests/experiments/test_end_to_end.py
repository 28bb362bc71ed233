"""Variants through real backends: variant B's visitors reach backend B with the header,
exposures and later tracker and Segment events carry the assignment in Apache Kafka, a
visitor without a cookie is assigned and cookied once, the override works only where
enabled, and the admin API and CLI report the split."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config.experiments import Experiment
from gateway.experiments.assign import Assigner
from tests.apache_kafka import ApacheKafka
from tests.backends import backends
from tests.events_support import tracking_config, values
from tests.support import in_process_gateway, with_routes

KEY = "wk_xp"
ROOT = Path(__file__).resolve().parents[2]


def config_for(tmp_path: Path, bootstrap: str, control: str, variant: str) -> dict[str, Any]:
    config = tracking_config(tmp_path, bootstrap, write_keys=[KEY])
    config = with_routes(
        config,
        {"name": "segment", "match": {"path_prefix": "/v1"}, "segment": {}},
        {"name": "collect", "match": {"path_prefix": "/t"}, "collect": {}},
        {"name": "app", "proxy": {"upstreams": [control]}},
    )
    config["experiments"] = [
        {"name": "checkout", "routes": ["app"], "override": {"query": "xp"},
         "variants": [{"name": "old", "weight": 0.5},
                      {"name": "new", "weight": 0.5, "proxy": {"upstreams": [variant]},
                       "headers": {"X-Flag": "on"},
                       "rewrite": {"from": "/cart", "to": "/v2/cart"}}]},
        {"name": "pricing", "routes": ["app"], "headers": {"X-Beta": "1"},
         "variants": [{"name": "low", "weight": 0.5}, {"name": "high", "weight": 0.5}]},
    ]  # fmt: skip
    return config


def visitor_in(config: dict[str, Any], variant: str) -> str:
    assigner = Assigner(Experiment.model_validate_json(json.dumps(config["experiments"][0])))
    return next(
        v for v in (str(uuid.uuid4()) for _ in range(1000)) if assigner.variant_of(v) == variant
    )


async def get(
    url: str, cookies: dict[str, str] | None = None, **headers: str
) -> tuple[int, Any, list[str]]:
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.get(url, headers=headers) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, body, resp.headers.getall("Set-Cookie", [])


def upstream_header(body: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in body["headers"] if k.lower() == name.lower()), None)


async def test_variants_reach_their_backend_and_every_event_says_which(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    async with backends("control", "variant") as (control, variant):
        config = config_for(tmp_path, kafka_broker.bootstrap, control.url, variant.url)
        old_visitor, new_visitor = visitor_in(config, "old"), visitor_in(config, "new")
        async with in_process_gateway(config, tmp_path) as gw:
            # A first visit without any cookie: assigned, cookied once.
            status, body, cookies = await get(gw.url("/cart?x=1"))
            assert status == 200
            names = sorted(c.split("=")[0] for c in cookies)
            assert names == ["sid", "vid", "xp"]
            xp = next(c for c in cookies if c.startswith("xp="))
            assert "HttpOnly" not in xp and "Max-Age=7776000" in xp  # the page's JS reads it
            minted = next(c for c in cookies if c.startswith("vid=")).split(";")[0][4:]
            expected = Assigner(Experiment.model_validate_json(
                json.dumps(config["experiments"][0]))).variant_of(minted)  # fmt: skip
            assert xp.split(";")[0] == f"xp=checkout={expected}"

            # Each visitor's requests reach their variant's backend, with the headers.
            session = {"vid": new_visitor, "sid": "s-1"}
            status, body, cookies = await get(gw.url("/cart?x=1"), session)
            assert (body["backend"], body["path"]) == ("variant", "/v2/cart?x=1")
            assert upstream_header(body, "X-Experiment-checkout") == "new"
            assert upstream_header(body, "X-Flag") == "on"
            assert upstream_header(body, "X-Experiment-pricing") is None  # not targeted
            again = {**session, "xp": "checkout=new"}
            status, body, cookies = await get(gw.url("/cart"), again)
            assert body["backend"] == "variant"
            assert [c for c in cookies if c.startswith("xp=")] == []  # unchanged: not re-set
            forged = {"X-Experiment-checkout": "new"}  # a client's own copy is replaced
            status, body, _ = await get(gw.url("/cart"), {"vid": old_visitor, "sid": "s-2"},
                                        **forged)  # fmt: skip
            assert (body["backend"], body["path"]) == ("control", "/cart")
            sent = [v for k, v in body["headers"] if k.lower() == "x-experiment-checkout"]
            assert sent == ["old"]
            assert upstream_header(body, "X-Flag") is None
            # Targeting: pricing only for requests with X-Beta: 1.
            _, body, cookies = await get(gw.url("/"), again, **{"X-Beta": "1"})
            assert upstream_header(body, "X-Experiment-pricing") in ("low", "high")

            # The override: enabled for checkout (a QA link), not for pricing.
            _, body, _ = await get(gw.url("/cart?xp=new"), {"vid": old_visitor, "sid": "s-2"})
            assert body["backend"] == "variant"

            # Later events of the new-variant visitor carry the assignment.
            tracked = {"vid": new_visitor, "sid": "s-1", "xp": "checkout=new"}
            status, _, _ = await get(gw.url("/t/tr/v1/ename/purchase"), tracked)
            assert status == 204
            auth = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
                async with client.post(
                    gw.url("/v1/track"),
                    json={"event": "Paid", "anonymousId": new_visitor, "properties": {}},
                    headers={"Authorization": auth, "Cookie": "xp=checkout=new"},
                ) as resp:
                    assert resp.status == 200
            admin = gw.url("/_gateway/experiments", listener="admin")
            report = await get(admin)
            one = await get(admin + "/checkout")
            missing = await get(admin + "/nope")
            cli = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "gateway", "experiments", "--config",
                 str(gw.config_path), "--url", gw.url("", listener="admin").rstrip("/"), "list"],
                capture_output=True, text=True, cwd=ROOT, timeout=60,
            )  # fmt: skip
            shown = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "gateway", "experiments", "--config",
                 str(gw.config_path), "--url", gw.url("", listener="admin").rstrip("/"),
                 "show", "checkout"],
                capture_output=True, text=True, cwd=ROOT, timeout=60,
            )  # fmt: skip
    events = values(await kafka_broker.records(config["kafka"]["topic"]))
    exposures = [e for e in events if e["event_type"] == "experiment_exposure"]
    assert [(e["properties"]["experiment"], e["properties"]["variant"],
             e["properties"]["reason"]) for e in exposures] == [
        ("checkout", expected, "assigned"),  # the first visit
        ("checkout", "new", "assigned"),  # new_visitor's first (a new session for us)
        ("checkout", "old", "assigned"),
        ("pricing", exposures[3]["properties"]["variant"], "assigned"),
        ("checkout", "new", "override"),
    ]  # fmt: skip
    for exposure in exposures:
        assert exposure["properties"]["route"] == "app"
        assert exposure["experiments"][exposure["event_name"]] == exposure["properties"]["variant"]
    assert exposures[1]["anonymous_id"] == new_visitor
    purchase = next(e for e in events if e["event_name"] == "purchase")
    paid = next(e for e in events if e["event_name"] == "Paid")
    assert purchase["experiments"] == paid["experiments"] == {"checkout": "new"}
    status, body, _ = report
    assert status == 200 and [x["name"] for x in body["experiments"]] == ["checkout", "pricing"]
    status, body, _ = one
    variants = {v["name"]: v["exposures"] for v in body["variants"]}
    assert variants == {"old": 1 + (expected == "old"), "new": 2 + (expected == "new")}
    assert set(body["srm"]) == {"chi_square", "p_value", "mismatch"}
    assert missing[0] == 404
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith("checkout running old=") and "srm p=" in cli.stdout
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == one[1]  # the admin API's answer, as JSON


async def test_the_override_is_ignored_from_clients_it_does_not_trust(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    async with backends("control", "variant") as (control, variant):
        config = config_for(tmp_path, kafka_broker.bootstrap, control.url, variant.url)
        config["experiments"][0]["override"] = {"query": "xp", "trusted": ["10.0.0.0/8"]}
        old_visitor = visitor_in(config, "old")
        async with in_process_gateway(config, tmp_path) as gw:
            _, body, _ = await get(gw.url("/cart?xp=new"), {"vid": old_visitor})
            assert body["backend"] == "control"


async def test_a_visitor_under_dnt_is_not_enrolled_when_dnt_is_honoured(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    async with backends("control", "variant") as (control, variant):
        config = config_for(tmp_path, kafka_broker.bootstrap, control.url, variant.url)
        config["tracking"]["honor_dnt"] = True
        async with in_process_gateway(config, tmp_path) as gw:
            _, body, cookies = await get(gw.url("/cart"), {"vid": visitor_in(config, "new")},
                                         DNT="1")  # fmt: skip
    assert body["backend"] == "control" and cookies == []
    assert upstream_header(body, "X-Experiment-checkout") is None


async def test_a_static_variant_serves_from_its_own_root(tmp_path: Path) -> None:
    old_root, new_root = tmp_path / "old", tmp_path / "new"
    for root, text in ((old_root, "old page\n"), (new_root, "new page\n")):
        root.mkdir()
        (root / "index.html").write_text(text)
    config = with_routes(
        tracking_config(tmp_path, None),
        {"name": "site", "static": {"root": str(old_root)}},
    )
    config["experiments"] = [{"name": "landing", "routes": ["site"], "variants": [
        {"name": "old", "weight": 0.5},
        {"name": "new", "weight": 0.5, "static_root": str(new_root)},
    ]}]  # fmt: skip
    assigner = Assigner(Experiment.model_validate_json(json.dumps(config["experiments"][0])))
    pages = {}
    async with in_process_gateway(config, tmp_path) as gw:
        for variant in ("old", "new"):
            visitor = next(v for v in (str(uuid.uuid4()) for _ in range(1000))
                           if assigner.variant_of(v) == variant)  # fmt: skip
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
                async with session.get(gw.url("/"), headers={"Cookie": f"vid={visitor}"}) as r:
                    pages[variant] = (r.status, await r.text(), r.headers.getall("Set-Cookie"))
    assert (pages["old"][:2], pages["new"][:2]) == ((200, "old page\n"), (200, "new page\n"))
    assert any(c.startswith("xp=landing=new;") for c in pages["new"][2])
