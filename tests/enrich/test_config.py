"""tracking.enrich in the config: every mistake named at its key path, before serving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from tests.enrich.test_geo import ASN, CITY

ROOT = Path(__file__).resolve().parents[2]


def config_with(enrich: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": {"listeners": [{"name": "public", "port": 8080}]},
        "tracking": {"enrich": enrich},
    }


def issues(enrich: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config_with(enrich)).encode(), env={"SALT": "s" * 8})
    return [str(issue) for issue in caught.value.issues]


def test_every_step_is_off_unless_configured() -> None:
    config = parse_config(json.dumps(config_with({})).encode(), env={})
    enrich = config.tracking.enrich
    assert enrich is not None and not enrich.any_step
    assert parse_config(
        json.dumps(config_with({"device": {}})).encode(), env={}
    ).tracking.enrich.any_step  # type: ignore[union-attr]


def test_databases_that_are_missing_unreadable_or_of_the_wrong_kind(tmp_path: Path) -> None:
    text = tmp_path / "city.mmdb"
    text.write_text("no")
    missing = str(tmp_path / "asn.mmdb")
    assert issues({"geo": {"city_db": str(text), "asn_db": missing}}) == [
        f"tracking.enrich.geo.city_db: {text}: not a MaxMind DB file (Error opening database "
        f"file ({text}). Is this a valid MaxMind DB file?)",
        f"tracking.enrich.geo.asn_db: {missing}: no such file",
    ]
    assert issues({"geo": {"city_db": ASN, "asn_db": CITY}}) == [
        f"tracking.enrich.geo.city_db: {ASN}: a GeoLite2-ASN database, not a City or Country one",
        f"tracking.enrich.geo.asn_db: {CITY}: a GeoIP2-City database, not an ASN or ISP one",
    ]
    assert issues({"geo": {}}) == ["tracking.enrich.geo: needs city_db or asn_db"]


def test_plans_with_a_bad_schema_or_file(tmp_path: Path) -> None:
    assert issues({"plans": {"plans": [
        {"name": "d", "event_name": "D"},
        {"name": "e", "event_name": "E", "schema": {}, "mode": "reject"},
    ]}}) == [
        "tracking.enrich.plans.plans[0]: give schema or schema_file",
        "tracking.enrich.plans.plans[1].mode: Input should be 'flag', 'omit' or 'block'",
    ]  # fmt: skip
    not_json = tmp_path / "plan.json"
    not_json.write_text("{")
    none = tmp_path / "none.json"
    assert issues({"plans": {"iglu_dir": str(tmp_path / "nowhere"), "plans": [
        {"name": "a", "event_name": "A", "schema": {"type": 12}},
        {"name": "b", "event_name": "B", "schema_file": str(not_json)},
        {"name": "c", "event_name": "C", "schema_file": str(none)},
        {"name": "f", "event_name": "F", "schema": {"type": "object"}},
    ]}}) == [
        "tracking.enrich.plans.plans[0].schema: not a valid JSON Schema: 12 is not valid "
        "under any of the schemas listed in the 'anyOf' keyword",
        f"tracking.enrich.plans.plans[1].schema_file: {not_json}: not JSON (Expecting "
        "property name enclosed in double quotes: line 1 column 2 (char 1))",
        f"tracking.enrich.plans.plans[2].schema_file: {none}: cannot read (No such file or "
        "directory)",
        "tracking.enrich.plans.iglu_dir: is not a directory",
    ]  # fmt: skip


def test_field_paths_categories_sources_and_salts() -> None:
    assert issues({
        "pii": {"salt": "short", "fields": ["email", "properties.email", "context."]},
        "consent": {"rules": [{"category": "Ads", "action": "strip"}]},
        "sources": {"intake": {"off": ["geo"]}, "pixel": {"off": ["device"]}},
        "bots": {"patterns": [{"name": "x", "pattern": "("}], "ip_ranges": ["300.1.1.1/8"]},
    }) == [
        "tracking.enrich.bots.patterns[0].pattern: not a regular expression: missing ), "
        "unterminated subpattern at position 0",
        "tracking.enrich.bots.ip_ranges[0]: '300.1.1.1/8' is not an IP address or CIDR",
        "tracking.enrich.consent.rules[0]: strip needs fields",
        "tracking.enrich.pii.salt: String should have at least 16 characters",
        "tracking.enrich.pii.fields[0]: 'email' is not user_id, anonymous_id, ip, group_id, "
        "previous_id or a dotted path under properties, traits, context or extra",
        "tracking.enrich.sources: 'intake' is not a source (tracker, pixel, redirect, "
        "request, segment, snowplow)",
    ]  # fmt: skip


def test_a_source_cannot_turn_off_a_step_that_is_not_on() -> None:
    assert issues({"device": {}, "sources": {"pixel": {"off": ["geo", "device"]}}}) == [
        "tracking.enrich.sources.pixel.off: geo is not on"
    ]


def test_gateway_check_names_a_corrupt_database(tmp_path: Path) -> None:
    corrupt = tmp_path / "GeoIP2-City.mmdb"
    corrupt.write_bytes(Path(CITY).read_bytes()[:5000])  # a download cut short
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_with({"geo": {"city_db": str(corrupt)}})))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"tracking.enrich.geo.city_db: {corrupt}: not a MaxMind DB file (" in done.stderr
