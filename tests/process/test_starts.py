"""The one-line starts: ``gateway proxy``, ``serve-files`` and ``collect`` print the config
they build, then serve it as ``gateway run`` would; ``gateway schema`` prints the schema."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import parse_config
from gateway.config.schema import config_schema
from tests.apache_kafka import ApacheKafka
from tests.backends import backends
from tests.events_support import consume, values
from tests.ports import free_port
from tests.support import start_process, stop_process


def printed(*argv: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *argv], capture_output=True, text=True, timeout=30
    )
    return done.returncode, done.stdout, done.stderr


def test_proxy_prints_the_config_it_serves() -> None:
    code, out, _ = printed("proxy", "--from", ":9000", "--to", "10.0.0.5:3000", "--to",
                           "https://app.internal", "--print")  # fmt: skip
    assert code == 0
    assert json.loads(out) == {
        "server": {"listeners": [{"name": "web", "host": "0.0.0.0", "port": 9000}]},
        "routes": [{"name": "app", "proxy": {
            "upstreams": ["http://10.0.0.5:3000", "https://app.internal"]}}],
    }  # fmt: skip


def test_the_starts_defaults_as_documented() -> None:
    _, out, _ = printed("proxy", "--to", "127.0.0.1:3000", "--print")
    assert json.loads(out)["server"]["listeners"] == [
        {"name": "web", "host": "0.0.0.0", "port": 8080}
    ]
    _, out, _ = printed("serve-files", "--print")
    assert json.loads(out) == {
        "server": {"listeners": [{"name": "web", "host": "0.0.0.0", "port": 8080}]},
        "routes": [{"name": "files", "static": {"root": ".", "listing": False}}],
    }
    _, out, _ = printed("serve-files", "--listing", "--print")
    assert json.loads(out)["routes"][0]["static"]["listing"] is True
    # collect without --kafka: the spool keeps the events; the secrets are made up, printed.
    _, out, _ = printed("collect", "--print")
    config = json.loads(out)
    assert "kafka" not in config
    (write_key,) = config["tracking"]["write_keys"]
    (user,) = config["routes"][2]["intake"]["users"]
    assert len(write_key) >= 16 and len(user["password"]) >= 16
    _, again, _ = printed("collect", "--print")
    assert json.loads(again)["tracking"]["write_keys"] != [write_key]  # made up each time


def test_proxy_over_https_orders_its_certificate_and_redirects_port_80() -> None:
    code, out, _ = printed("proxy", "--https", "shop.example.com", "--to", ":3000",
                           "--email", "ops@shop.example.com", "--acme-directory",
                           "https://ca.example/dir", "--print")  # fmt: skip
    assert code == 0
    config = json.loads(out)
    assert config["server"]["listeners"] == [
        {"name": "https", "host": "0.0.0.0", "port": 443, "tls": True},
        {"name": "http", "host": "0.0.0.0", "port": 80, "redirect_to_https": 443},
    ]
    assert config["tls"] == {"acme": {"domains": ["shop.example.com"], "agree_to_terms": True,
                                      "email": "ops@shop.example.com",
                                      "directory": "https://ca.example/dir"}}  # fmt: skip
    assert config["routes"][0]["proxy"]["upstreams"] == ["http://127.0.0.1:3000"]
    parse_config(out.encode(), env={})  # what gateway run would accept


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("proxy", "--from", "8080", "--to", ":3000"), "'8080' is not HOST:PORT or :PORT"),
        (("proxy", "--to", "ftp://x", "--print"), "routes[0].proxy.upstreams[0]"),
        (("collect", "--kafka", "nocolon", "--print"), "kafka.bootstrap_servers"),
    ],
)
def test_a_start_with_bad_flags_names_the_problem(argv: tuple[str, ...], message: str) -> None:
    code, _, err = printed(*argv)
    assert code == 2
    assert message in err


def test_schema_prints_the_published_schema() -> None:
    code, out, _ = printed("schema")
    assert code == 0
    assert json.loads(out) == config_schema()


def test_every_command_says_what_it_does_with_an_example() -> None:
    for command in ("run", "check", "proxy", "serve-files", "collect", "schema", "spool",
                    "links", "cache", "experiments", "certs"):  # fmt: skip
        code, out, _ = printed(command, "--help")
        assert code == 0
        assert "Example" in out, command


async def test_proxy_serves_the_app(tmp_path: Path) -> None:
    port = free_port()
    async with backends("app") as (app,):
        argv = ("proxy", "--from", f"127.0.0.1:{port}", "--to", app.url.removeprefix("http://"))
        gateway = await start_process(None, workers=1, listeners=1, argv=argv, cwd=tmp_path)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/any/path?q=1") as resp:
                    assert resp.status == 200
                    answer = await resp.json()
        finally:
            await stop_process(gateway)
    assert (answer["backend"], answer["path"]) == ("app", "/any/path?q=1")


async def test_serve_files_serves_the_folder(tmp_path: Path) -> None:
    public = tmp_path / "public"
    public.mkdir()
    (public / "index.html").write_bytes(b"<h1>hi</h1>\n")
    port = free_port()
    argv = ("serve-files", "--root", str(public), "--listen", f"127.0.0.1:{port}")
    gateway = await start_process(None, workers=1, listeners=1, argv=argv, cwd=tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                assert (resp.status, await resp.read()) == (200, b"<h1>hi</h1>\n")
                assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            async with session.get(f"http://127.0.0.1:{port}/missing") as resp:
                assert resp.status == 404
    finally:
        await stop_process(gateway)


async def test_collect_takes_every_protocol_into_kafka(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    port, topic = free_port(), "one-line-collect"
    argv = (
        "collect",
        "--listen",
        f"127.0.0.1:{port}",
        "--kafka",
        kafka_broker.bootstrap,
        "--topic",
        topic,
        "--write-key",
        "wk-1",
        "--intake-password",
        "intake-secret",
    )
    gateway = await start_process(None, workers=1, listeners=1, argv=argv, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    segment = base64.b64encode(b"wk-1:").decode()
    intake = base64.b64encode(b"intake:intake-secret").decode()
    rill = {"event_id": "0193a5b8-0000-7000-8000-000000000001", "event_type": "behavioral",
            "event_name": "rill-1", "event_time": "2026-12-02T06:00:00Z"}  # fmt: skip
    sent: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/t/tr/v1/ename/tracker-1", {}),
        ("POST", "/v1/track", {"json": {"userId": "u1", "event": "segment-1"},
                               "headers": {"Authorization": f"Basic {segment}"}}),
        ("POST", "/intake", {"data": json.dumps(rill) + "\n",
                             "headers": {"Authorization": f"Basic {intake}"}}),
        ("GET", "/i", {"params": {"e": "se", "se_ca": "shop", "se_ac": "snowplow-1"}}),
    ]  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            for method, path, options in sent:
                async with session.request(method, base + path, **options) as resp:
                    assert resp.status < 300, (path, resp.status, await resp.text())
        # Snowplow's pixel answers before its event is in Kafka: a stop flushes it.
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait() == 0
    finally:
        await stop_process(gateway)
    events = values(await consume(kafka_broker.bootstrap, topic, 4))
    assert sorted(str(e.get("event_name")) for e in events) == [
        "rill-1", "segment-1", "snowplow-1", "tracker-1"
    ]  # fmt: skip
