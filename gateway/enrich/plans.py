"""Tracking plans: a JSON Schema per event (by type and name) for its properties,
validated with jsonschema-rs, compiled once per config.

Modes: ``flag`` lists violations in the envelope; ``omit`` removes properties the plan
does not name (listed as violations too), then validates the rest; ``block`` sends the
event, violations listed, to the dead-letter topic. An event no plan names is allowed or
blocked (``unplanned``). Snowplow self-describing events (named by their Iglu URI) are
validated against the schema at ``iglu_dir/vendor/name/jsonschema/1-0-0`` when that is
set. A valid event costs one ``is_valid`` call (under a µs); errors are gathered only
for invalid ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.config.enrich import compile_schema, load_schema

if TYPE_CHECKING:
    from gateway.config.enrich import Plans

MAX_VIOLATIONS = 20  # per event: a payload cannot make the envelope balloon
_IGLU_META = ("$schema", "self")  # Iglu's self-description, not JSON Schema keywords


@dataclass(frozen=True, slots=True)
class Compiled:
    name: str
    mode: str
    validator: Any
    allowed: frozenset[str] | None  # omit: the properties the plan names


@dataclass(slots=True)
class Verdict:
    """What the plans say of one event."""

    violations: list[dict[str, Any]]
    blocked: bool
    plan: str  # for the metric: a plan's name, "unplanned" or "iglu"
    mode: str
    properties: dict[str, Any] | None = None  # omit: what is left


class TrackingPlans:
    def __init__(self, config: Plans) -> None:
        self.config = config
        self._plans = {}
        for plan in config.plans:
            schema = load_schema(plan)
            named = frozenset(schema.get("properties") or ()) if plan.mode == "omit" else None
            compiled = Compiled(plan.name, plan.mode, compile_schema(schema), named)
            self._plans[plan.event_type, plan.event_name] = compiled
        self._iglu: dict[str, Compiled | None] = {}

    def check(self, event_type: str, event_name: str, properties: dict[str, Any]) -> Verdict | None:
        """None when the event passes (or nothing applies)."""
        plan = self._plans.get((event_type, event_name))
        if plan is None and event_name.startswith("iglu:") and self.config.iglu_dir:
            plan = self._iglu_plan(event_name)
            if plan is None:
                missing = _violation("iglu", "", "schema", f"no schema for {event_name}")
                return Verdict([missing], False, "iglu", "flag")
        if plan is None:
            if self.config.unplanned == "allow":
                return None
            violation = _violation(
                None, "", "unplanned", f"no plan for {event_type} {event_name!r}"
            )
            return Verdict([violation], True, "unplanned", "block")
        violations: list[dict[str, Any]] = []
        kept = None
        if plan.allowed is not None and not properties.keys() <= plan.allowed:
            kept = {k: v for k, v in properties.items() if k in plan.allowed}
            for key in sorted(properties.keys() - plan.allowed)[:MAX_VIOLATIONS]:
                violations.append(_violation(plan.name, f"/{key}", "unplanned", "removed"))
            properties = kept
        if not plan.validator.is_valid(properties):
            for error in plan.validator.iter_errors(properties):
                if len(violations) >= MAX_VIOLATIONS:
                    break
                path = "".join(f"/{part}" for part in error.instance_path)
                violations.append(_violation(plan.name, path, _keyword(error), error.message))
        if not violations:
            return None
        return Verdict(violations, plan.mode == "block", plan.name, plan.mode, kept)

    def _iglu_plan(self, uri: str) -> Compiled | None:
        """The Iglu schema of ``iglu:vendor/name/format/version``, compiled once."""
        if uri in self._iglu:
            return self._iglu[uri]
        compiled = None
        parts = uri.removeprefix("iglu:").split("/")
        root = self.config.iglu_dir or ""
        if len(parts) == 4 and all(p and p not in (".", "..") for p in parts):
            try:
                with open(os.path.join(root, *parts), encoding="utf-8") as handle:
                    document = json.load(handle)
                schema = {k: v for k, v in document.items() if k not in _IGLU_META}
                compiled = Compiled("iglu", "flag", compile_schema(schema), None)
            except Exception:  # unreadable, not JSON, not a schema: a violation, not a crash
                compiled = None
        if len(self._iglu) < 1024:  # URIs come from clients: bounded
            self._iglu[uri] = compiled
        return compiled


def _keyword(error: Any) -> str:
    name = type(error.kind).__name__
    return name[:1].lower() + name[1:]


def _violation(plan: str | None, path: str, keyword: str, message: str) -> dict[str, Any]:
    return {"plan": plan, "path": path, "keyword": keyword, "message": message}
