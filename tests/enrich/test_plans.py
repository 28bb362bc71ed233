"""Tracking plans: each mode, unplanned events, and Iglu schemas for Snowplow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.config.enrich import Plans
from gateway.enrich.plans import MAX_VIOLATIONS, TrackingPlans

ORDER = {
    "type": "object",
    "required": ["order_id", "total"],
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "total": {"type": "number", "minimum": 0},
        "currency": {"enum": ["USD", "EUR"]},
    },
}
GOOD = {"order_id": "o-1", "total": 9.5, "currency": "EUR"}


def plans(mode: str, **more: Any) -> TrackingPlans:
    plan = {"name": "order", "event_name": "Order Completed", "schema": ORDER, "mode": mode}
    return TrackingPlans(Plans.model_validate_json(json.dumps({"plans": [plan], **more})))


def test_a_valid_event_passes_in_every_mode() -> None:
    for mode in ("flag", "omit", "block"):
        assert plans(mode).check("track", "Order Completed", dict(GOOD)) is None


def test_flag_lists_every_violation_with_its_path_and_keyword() -> None:
    verdict = plans("flag").check("track", "Order Completed", {"total": -1, "currency": "JPY"})
    assert verdict is not None
    assert (verdict.blocked, verdict.plan, verdict.mode, verdict.properties) == (
        False, "order", "flag", None,
    )  # fmt: skip
    assert sorted((v["path"], v["keyword"]) for v in verdict.violations) == [
        ("", "required"), ("/currency", "enum"), ("/total", "minimum"),
    ]  # fmt: skip
    assert {v["plan"] for v in verdict.violations} == {"order"}
    minimum = next(v for v in verdict.violations if v["keyword"] == "minimum")
    assert minimum["message"] == "-1 is less than the minimum of 0"


def test_omit_removes_unplanned_properties_and_names_them() -> None:
    sent = {**GOOD, "email": "a@example.com", "debug": True}
    verdict = plans("omit").check("track", "Order Completed", sent)
    assert verdict is not None
    assert verdict.properties == GOOD
    assert verdict.violations == [
        {"plan": "order", "path": "/debug", "keyword": "unplanned", "message": "removed"},
        {"plan": "order", "path": "/email", "keyword": "unplanned", "message": "removed"},
    ]
    assert sent["email"] == "a@example.com"  # the caller's dict is not changed
    assert not verdict.blocked


def test_block_sends_an_invalid_event_away() -> None:
    verdict = plans("block").check("track", "Order Completed", {"order_id": ""})
    assert verdict is not None and verdict.blocked
    assert [v["keyword"] for v in verdict.violations] == ["required", "minLength"]


def test_unplanned_events_are_allowed_or_blocked() -> None:
    assert plans("flag").check("track", "Signed Up", {}) is None
    verdict = plans("flag", unplanned="block").check("page", "Home", {})
    assert verdict is not None
    assert (verdict.blocked, verdict.plan, verdict.violations) == (
        True, "unplanned",
        [{"plan": None, "path": "", "keyword": "unplanned", "message": "no plan for page 'Home'"}],
    )  # fmt: skip
    # A plan is for one event type: a page named like a planned track is not planned.
    assert plans("flag", unplanned="block").check("page", "Order Completed", GOOD) is not None


def test_violations_are_capped() -> None:
    many = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(50)}}
    tracking = TrackingPlans(
        Plans.model_validate_json(
            json.dumps({"plans": [{"name": "many", "event_name": "E", "schema": many}]})
        )
    )
    verdict = tracking.check("track", "E", {f"p{i}": i for i in range(50)})
    assert verdict is not None and len(verdict.violations) == MAX_VIOLATIONS


def test_a_schema_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "order.json"
    path.write_text(json.dumps(ORDER))
    plan = {"name": "order", "event_name": "Order Completed", "schema_file": str(path)}
    tracking = TrackingPlans(Plans.model_validate_json(json.dumps({"plans": [plan]})))
    assert tracking.check("track", "Order Completed", {"total": 1}) is not None


def iglu(tmp_path: Path) -> Path:
    """An Iglu layout with one schema, as Snowplow writes them (self-describing)."""
    directory = tmp_path / "iglu" / "com.acme" / "signup" / "jsonschema"
    directory.mkdir(parents=True)
    (directory / "1-0-0").write_text(json.dumps({
        "$schema": "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/"
                   "jsonschema/1-0-0#",
        "self": {"vendor": "com.acme", "name": "signup", "format": "jsonschema",
                 "version": "1-0-0"},
        "type": "object",
        "properties": {"plan": {"enum": ["free", "pro"]}},
        "required": ["plan"],
        "additionalProperties": False,
    }))  # fmt: skip
    return tmp_path / "iglu"


def test_snowplow_self_describing_events_are_checked_against_iglu_schemas(
    tmp_path: Path,
) -> None:
    tracking = TrackingPlans(
        Plans.model_validate_json(json.dumps({"iglu_dir": str(iglu(tmp_path))}))
    )
    uri = "iglu:com.acme/signup/jsonschema/1-0-0"
    assert tracking.check("track", uri, {"plan": "pro"}) is None
    verdict = tracking.check("track", uri, {"plan": "gold", "x": 1})
    assert verdict is not None and not verdict.blocked
    assert sorted(v["keyword"] for v in verdict.violations) == ["additionalProperties", "enum"]
    missing = tracking.check("track", "iglu:com.acme/other/jsonschema/1-0-0", {})
    assert missing is not None
    assert missing.violations == [{
        "plan": "iglu", "path": "", "keyword": "schema",
        "message": "no schema for iglu:com.acme/other/jsonschema/1-0-0",
    }]  # fmt: skip
    # A URI is a path under iglu_dir only when its four parts are plain names.
    escape = tracking.check("track", "iglu:../../../etc/passwd", {})
    assert escape is not None and escape.violations[0]["keyword"] == "schema"
