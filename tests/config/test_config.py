"""Config loading: every error names its key path; a good file becomes frozen objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from gateway.config import Config, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def issues_of(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(data).encode(), env=env or {})
    return [str(issue) for issue in caught.value.issues]


def minimal(**extra: Any) -> dict[str, Any]:
    return {"server": {"listeners": [{"name": "public", "port": 8080}]}, **extra}


def test_shipped_example_config_is_valid() -> None:
    config = load_config(ROOT / "config.json", env={})
    assert [listener.name for listener in config.server.listeners] == ["public", "admin"]
    assert [route.name for route in config.routes] == ["collect", "hello"]
    assert config.kafka is None  # the embedded default: events stay in the local spool


def test_defaults_are_filled_in() -> None:
    config = parse_config(json.dumps(minimal()).encode(), env={})
    assert config.server.listeners[0].host == "127.0.0.1"
    assert config.server.timeouts.read_header == 10.0
    assert config.server.limits.max_body_bytes == 1 << 20
    assert config.server.builtin_prefix == "/_gateway/"
    assert config.routes == ()


def test_loaded_config_is_frozen() -> None:
    config = parse_config(json.dumps(minimal()).encode(), env={})
    with pytest.raises(pydantic.ValidationError):
        config.server.listeners[0].port = 1  # type: ignore[misc]
    assert isinstance(config, Config)


def test_unknown_key_is_named_with_its_path() -> None:
    data = minimal()
    data["server"]["listeners"][0]["prot"] = 1
    assert issues_of(data) == ["server.listeners[0].prot: unknown key"]


def test_wrong_type_is_an_error_not_a_conversion() -> None:
    data = minimal()
    data["server"]["listeners"][0]["port"] = "8080"
    assert issues_of(data) == ["server.listeners[0].port: Input should be a valid integer"]


def test_missing_required_key() -> None:
    assert issues_of({"routes": []}) == ["server: is required"]


def test_path_prefix_must_start_with_slash() -> None:
    data = minimal(routes=[{"name": "a"}, {"name": "b", "match": {"path_prefix": "api"}}])
    assert 'routes[1].match.path_prefix: must start with "/"' in issues_of(data)


def test_every_error_is_reported_at_once() -> None:
    data = {
        "server": {
            "listeners": [{"name": "Public", "port": 70000}],
            "trusted_proxies": ["10.0.0.0/8", "not-a-cidr"],
        },
        "routes": [{"name": "r", "respond": {"status": 99}}],
    }
    assert issues_of(data) == [
        "server.listeners[0].name: must be lowercase letters, digits, '-' or '_' (at most 64)",
        "server.listeners[0].port: Input should be less than or equal to 65535",
        "server.trusted_proxies[1]: 'not-a-cidr' is not an IP address or CIDR",
        "routes[0].respond.status: Input should be greater than or equal to 200",
    ]


def test_environment_variables_are_substituted() -> None:
    data = minimal(routes=[{"name": "r", "respond": {"body": "token=${ADMIN_TOKEN}"}}])
    config = parse_config(json.dumps(data).encode(), env={"ADMIN_TOKEN": "s3cret"})
    assert config.routes[0].respond is not None
    assert config.routes[0].respond.body == "token=s3cret"


def test_missing_environment_variable_is_named() -> None:
    data = minimal(routes=[{"name": "r", "respond": {"body": "${ADMIN_TOKEN}"}}])
    assert issues_of(data) == [
        "routes[0].respond.body: environment variable ADMIN_TOKEN is not set"
    ]


def test_route_without_handler() -> None:
    assert issues_of(minimal(routes=[{"name": "r"}])) == [
        "routes[0]: needs exactly one handler: one of respond, collect, segment, proxy, static, "
        "redirect, intake, snowplow"
    ]


def test_snowplow_paths_and_cookie_are_checked() -> None:
    route = {"name": "sp", "snowplow": {"paths": {"/track": "/i", "/com.acme/x": "/r/tp2"},
                                        "cookie": {"name": "s p", "max_age": 0}}}  # fmt: skip
    assert issues_of(minimal(routes=[route])) == [
        "routes[0].snowplow.cookie.name: 's p' is not a cookie name "
        "(letters, digits, !#$%&'*+-.^_`|~)",
        "routes[0].snowplow.cookie.max_age: Input should be greater than or equal to 1",
        "routes[0].snowplow.paths./com.acme/x: Input should be '/i' or "
        "'/com.snowplowanalytics.snowplow/tp2'",
    ]
    route = {"name": "sp", "snowplow": {"paths": {"/track": "/i"}}}
    assert issues_of(minimal(routes=[route])) == [
        "routes[0].snowplow.paths: '/track' is not a path like /com.acme/track"
    ]


def test_duplicate_names_and_addresses() -> None:
    data = {
        "server": {
            "listeners": [
                {"name": "a", "port": 8080},
                {"name": "a", "port": 8080},
            ]
        },
        "routes": [
            {"name": "r", "respond": {}},
            {"name": "r", "respond": {}},
        ],
    }
    assert issues_of(data) == [
        "server.listeners[1].name: duplicate listener name 'a' (also server.listeners[0])",
        "server.listeners[1].port: 127.0.0.1:8080 is already used by server.listeners[0]",
        "routes[1].name: duplicate route name 'r' (also routes[0])",
    ]


def test_admin_listener_must_be_loopback() -> None:
    data = {"server": {"listeners": [{"name": "a", "host": "0.0.0.0", "port": 1, "admin": True}]}}
    assert issues_of(data) == [
        "server.listeners[0].host: an admin listener must bind a loopback address"
    ]


def test_listener_host_must_be_an_ip() -> None:
    data = {"server": {"listeners": [{"name": "a", "host": "example.com", "port": 1}]}}
    assert issues_of(data) == [
        "server.listeners[0].host: must be an IP address such as 127.0.0.1, 0.0.0.0 or ::"
    ]


def test_route_inside_builtin_prefix_is_rejected() -> None:
    data = minimal(routes=[{"name": "r", "match": {"path_prefix": "/_gateway/x"}, "respond": {}}])
    assert issues_of(data) == [
        "routes[0].match.path_prefix: is inside server.builtin_prefix '/_gateway/'"
    ]


def test_header_values_cannot_inject_lines() -> None:
    data = minimal(routes=[{"name": "r", "respond": {"headers": {"X-A": "1\r\nSet-Cookie: x"}}}])
    assert issues_of(data) == [
        "routes[0].respond.headers: 'X-A' value must not contain CR, LF or NUL"
    ]


def test_invalid_json_says_where() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(b'{"server": ', env={})
    assert str(caught.value.issues[0]).startswith("invalid JSON: ")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.json")
    assert [str(i) for i in caught.value.issues] == ["cannot read: No such file or directory"]


def test_only_a_segment_route_that_is_on_needs_write_keys() -> None:
    route = {"name": "s", "match": {"path_prefix": "/v1"}, "segment": {"enabled": False}}
    config = {"server": {"listeners": [{"name": "p", "port": 0}]}, "routes": [route]}
    assert parse_config(json.dumps(config).encode(), env={}).routes[0].segment is not None
    route["segment"] = {}
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config).encode(), env={})
    assert [str(issue) for issue in caught.value.issues] == [
        "routes[0].segment: needs tracking.write_keys to check callers"
    ]


def _route(**handler: Any) -> dict[str, Any]:
    return {"name": "r", **handler}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c, tmp: c.update(
                routes=[
                    _route(
                        proxy={
                            "upstreams": ["https://b.example"],
                            "ca_file": str(tmp / "missing.pem"),
                        }
                    )
                ]
            ),
            "routes[0].proxy.ca_file: {tmp}/missing.pem: no such file",
        ),
        (
            lambda c, tmp: c["server"].update(access_log={"path": str(tmp / "no" / "a.log")}),
            "server.access_log.path: {tmp}/no/a.log: directory '{tmp}/no' does not exist",
        ),
        (
            lambda c, tmp: c.update(spool={"dir": str(tmp / "file" / "spool")}),
            "spool.dir: {tmp}/file/spool: '{tmp}/file' is a file, not a directory",
        ),
        (
            lambda c, tmp: c.update(
                tracking={"cookies": {"visitor": {"name": "my id", "max_age": 60}}}
            ),
            "tracking.cookies.visitor.name: 'my id' is not a cookie name "
            "(letters, digits, !#$%&'*+-.^_`|~)",
        ),
        (
            lambda c, tmp: c.update(
                tracking={"cookies": {"session": {"name": "a;b", "max_age": 60}}}
            ),
            "tracking.cookies.session.name: 'a;b' is not a cookie name "
            "(letters, digits, !#$%&'*+-.^_`|~)",
        ),
        (
            lambda c, tmp: c.update(
                routes=[_route(respond={"content_type": "text/plain\r\nX-Injected: 1"})]
            ),
            "routes[0].respond.content_type: must not contain CR, LF or NUL",
        ),
        (
            lambda c, tmp: c.update(kafka={"bootstrap_servers": ["b1:9092", "localhost"]}),
            "kafka.bootstrap_servers[1]: 'localhost' is not host:port",
        ),
        (
            lambda c, tmp: c.update(kafka={"bootstrap_servers": ["b1:99999"]}),
            "kafka.bootstrap_servers[0]: 'b1:99999' is not host:port",
        ),
    ],
)
def test_configs_that_would_crash_a_worker_are_refused(
    tmp_path: Path, change: Any, expected: str
) -> None:
    # Fault run F5: each of these passed `check`, then every worker exited at start-up.
    (tmp_path / "file").write_text("not a directory")
    config = minimal()
    change(config, tmp_path)
    assert issues_of(config) == [expected.format(tmp=tmp_path)]


def test_a_key_given_twice_is_refused_with_its_path() -> None:
    raw = b'{"server": {"listeners": [{"name": "a", "port": 1, "port": 2}]}, "routes": []}'
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env={})
    assert [str(issue) for issue in caught.value.issues] == [
        "server.listeners[0].port: given more than once (the last would win)"
    ]


def test_shared_rules_need_a_redis_backend_with_a_redis_url() -> None:
    rules = [{"name": "r", "rate": 5, "shared": True}]
    assert issues_of(minimal(rate_limits={"rules": rules})) == [
        'rate_limits.rules[0].shared: needs rate_limits.backend {"kind": "redis"}'
    ]
    backend = {"kind": "redis", "url": "http://cache:6379", "on_error": "maybe"}
    assert issues_of(minimal(rate_limits={"backend": backend, "rules": rules})) == [
        "rate_limits.backend.redis.url: must be redis://host:port[/db] or rediss://host:port[/db]",
        "rate_limits.backend.redis.on_error: Input should be 'local', 'allow' or 'deny'",
    ]
