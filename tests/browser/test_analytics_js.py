"""analytics-next's UMD bundle in headless Chromium (Debian's, driven by Selenium with
Debian's chromium-driver), on a page of another origin: it loads its settings from the
gateway and its page, identify and track calls reach Kafka; from an origin the gateway
does not allow, nothing is delivered."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from gateway.config import parse_config
from tests.apache_kafka import ApacheKafka
from tests.events_support import consume, tracking_config, values
from tests.support import in_process_gateway

KEY = "wk_browser_1"
BUNDLE = Path(__file__).parent / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
PAGE = """<!doctype html>
<html><head><title>loading</title></head><body>
<script src="/analytics-next/bundles/index.js"></script>
<script>
  const { AnalyticsBrowser } = window.AnalyticsNext;
  const analytics = AnalyticsBrowser.load({ writeKey: "%(key)s", cdnURL: "%(cdn)s" });
  Promise.all([
    analytics.page("Docs", { section: "install" }),
    analytics.identify("user-1", { plan: "pro" }),
    analytics.track("Clicked Install", { n: 1 }),
  ]).then(() => { document.title = "sent"; }, (error) => { document.title = "failed"; });
</script>
</body></html>
"""


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def site_config(tmp_path: Path, bootstrap: str) -> dict[str, Any]:
    config = tracking_config(tmp_path, bootstrap, write_keys=[KEY])
    (tmp_path / "site").mkdir()
    config["routes"] = [
        {"name": "segment", "match": {"path_prefix": "/v1"}, "segment": {}},
        # Where analytics-next loads its own chunks from: <cdnURL>/analytics-next/bundles.
        {"name": "bundles", "match": {"path_prefix": "/analytics-next/bundles"},
         "static": {"root": str(BUNDLE)}},
        {"name": "site", "match": {"path_prefix": "/site"},
         "static": {"root": str(tmp_path / "site")}},
    ]  # fmt: skip
    return config


async def serve_page(gw: Any, config: dict[str, Any], tmp_path: Path, allowed: str) -> str:
    """The page's URL on origin localhost; the gateway's API on 127.0.0.1 (another
    origin), allowing ``allowed`` to call it."""
    port = gw.ports["public"]
    cdn = f"http://127.0.0.1:{port}"
    (tmp_path / "site" / "index.html").write_text(PAGE % {"key": KEY, "cdn": cdn})
    config["tracking"]["cors"] = {"allowed_origins": [allowed.format(port=port)]}
    issues = await gw.worker.reload(parse_config(json.dumps(config).encode(), env={}))
    assert issues == []
    return f"http://localhost:{port}/site/index.html"


async def title_after(driver: webdriver.Chrome, url: str, limit: float) -> str:
    def load() -> str:
        driver.get(url)
        with contextlib.suppress(TimeoutException):  # the title then says what happened
            WebDriverWait(driver, limit).until(lambda d: d.title in ("sent", "failed"))
        return str(driver.title)

    return await asyncio.to_thread(load)  # the gateway serves on this loop meanwhile


async def test_analytics_js_on_another_origin_delivers_through_the_gateway(
    tmp_path: Path, kafka_broker: ApacheKafka, browser: webdriver.Chrome
) -> None:
    config = site_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        url = await serve_page(gw, config, tmp_path, "http://localhost:{port}")
        assert await title_after(browser, url, 20) == "sent"
    events = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 3))
    by_type = {event["event_type"]: event for event in events}
    assert set(by_type) == {"page", "identify", "track"}
    assert by_type["page"]["event_name"] == "Docs"
    assert by_type["page"]["properties"]["section"] == "install"
    assert by_type["identify"]["user_id"] == "user-1"
    assert by_type["identify"]["traits"] == {"plan": "pro"}
    assert by_type["track"]["event_name"] == "Clicked Install"
    visitor = by_type["page"]["anonymous_id"]
    assert visitor and all(event["anonymous_id"] == visitor for event in events)
    for event in events:
        assert event["message_id"].startswith("ajs-next-")
        assert event["context"]["library"]["name"] == "analytics.js"
        assert event["context"]["page"]["url"] == url


async def test_a_page_from_an_origin_not_allowed_delivers_nothing(
    tmp_path: Path, kafka_broker: ApacheKafka, browser: webdriver.Chrome
) -> None:
    config = site_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        url = await serve_page(gw, config, tmp_path, "https://app.example.com")
        assert await title_after(browser, url, 8) != "sent"
        log = gw.access_log()
        queued = gw.worker.pipeline.queued
    settings = [line for line in log if line["uri"].endswith(f"/projects/{KEY}/settings")]
    assert settings and all(line["status"] == 200 for line in settings)  # but no CORS grant
    assert not [line for line in log if line["route"] == "segment" and line["method"] == "POST"]
    assert queued == 0
