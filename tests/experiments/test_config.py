"""experiments in the config: what cannot work is named at its key path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config


def issues(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config).encode(), env={})
    return [str(issue) for issue in caught.value.issues]


def base(tmp_path: Path, *experiments: dict[str, Any], **tracking: Any) -> dict[str, Any]:
    return {
        "server": {"listeners": [{"name": "public", "port": 8080}]},
        "routes": [
            {"name": "app", "proxy": {"upstreams": ["http://127.0.0.1:9"]}},
            {"name": "files", "match": {"path_prefix": "/f"}, "static": {"root": str(tmp_path)}},
            {"name": "cached", "match": {"path_prefix": "/c"},
             "proxy": {"upstreams": ["http://127.0.0.1:9"]}, "cache": {}},
        ],
        "tracking": tracking,
        "experiments": list(experiments),
    }  # fmt: skip


def two(**variant_b: Any) -> list[dict[str, Any]]:
    return [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5, **variant_b}]


def test_routes_actions_and_targeting_must_fit(tmp_path: Path) -> None:
    upstream = {"upstreams": ["http://127.0.0.1:9"]}
    assert issues(base(
        tmp_path,
        {"name": "x", "routes": ["app", "nope"], "variants": two(static_root=str(tmp_path))},
        {"name": "y", "routes": ["files"], "variants": two(proxy=upstream)},
        {"name": "z", "routes": ["cached"], "variants": two(), "countries": ["GB"],
         "device_types": ["mobile"]},
        {"name": "x", "routes": ["files"], "variants": two(static_root="/nowhere")},
    )) == [
        "experiments[0].routes[1]: no route named 'nope'",
        "experiments[0].variants[1].static_root: needs every route of the experiment to be static",
        "experiments[1].variants[1].proxy: needs every route of the experiment to proxy",
        "experiments[2].routes[0]: route 'cached' caches its answers: one variant's would be "
        "served to the other's visitors",
        "experiments[2].countries: needs tracking.enrich.geo",
        "experiments[2].device_types: needs tracking.enrich.device",
        "experiments[3].name: duplicate experiment name 'x'",
        "experiments[3].variants[1].static_root: '/nowhere' is not a directory",
    ]  # fmt: skip


def test_experiments_need_the_visitor_cookie(tmp_path: Path) -> None:
    config = base(tmp_path, {"name": "x", "routes": ["app"], "variants": two()},
                  cookies={"enabled": False})  # fmt: skip
    assert issues(config) == [
        "experiments: needs tracking.cookies.enabled: a visitor is known by its cookie"
    ]


def test_model_errors_name_the_experiment_key(tmp_path: Path) -> None:
    assert issues(base(tmp_path, {
        "name": "x", "routes": [], "status": "stopped",
        "variants": [{"name": "a", "weight": 1.5}, {"name": "b", "weight": 0.5,
                     "headers": {"Bad Name": "v"}, "rewrite": {"from": "x", "to": "/y"}}],
        "path_prefixes": ["nope"],
    })) == [
        "experiments[0].variants[0].weight: Input should be less than or equal to 1",
        "experiments[0].variants[1].headers: 'Bad Name': not a header field name and value",
        'experiments[0].variants[1].rewrite: from and to must start with "/"',
        "experiments[0].routes: Tuple should have at least 1 item after validation, not 0",
        "experiments[0].path_prefixes[0]: 'nope' must start with \"/\"",
    ]  # fmt: skip
