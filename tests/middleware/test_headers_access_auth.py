"""Per-route middleware against real backends: header rules, IP lists, basic auth and
forward auth (a real aiohttp auth service), with the exact statuses and headers."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp import web

from gateway.config import ConfigError, parse_config
from gateway.middleware import basic
from tests.backends import backends, recording_backend, serving
from tests.client import fetch
from tests.support import base_config, in_process_gateway, with_routes

PASSWORD = "correct horse"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # cost 4: fast tests


def basic_header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def upstream_saw(body: bytes) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


async def test_header_rules_on_requests_upstream_and_on_every_answer(tmp_path: Path) -> None:
    rules = {
        "request": {"set": {"X-Client": "{client_ip} {request_id}"}, "add": {"X-Tag": "b"},
                    "remove": ["X-Secret"]},
        "response": {"set": {"X-Frame-Options": "DENY", "X-Served-For": "{host}"},
                     "add": {"Link": "</a.css>; rel=preload"}, "remove": ["Server"]},
    }  # fmt: skip
    async with backends("a") as (a,):
        config = with_routes(
            base_config(tmp_path),
            {"name": "app", "match": {"path_prefix": "/app"}, "headers": rules,
             "max_body_bytes": 10, "proxy": {"upstreams": [a.url]}},
            {"name": "hello", "headers": {"response": rules["response"]},
             "respond": {"body": "hi"}},
        )  # fmt: skip
        async with in_process_gateway(config, tmp_path) as gw:
            status, headers, body = await fetch(
                gw.url("/app/x"), headers={"X-Secret": "s", "X-Tag": "a"}
            )
            too_big = await fetch(gw.url("/app/x"), "POST", data=b"x" * 100)
            hello = await fetch(gw.url("/"))
            log = gw.access_log()
    seen = upstream_saw(body)
    assert status == 200
    assert seen["x-client"] == [f"127.0.0.1 {log[0]['request_id']}"]
    assert seen["x-tag"] == ["a", "b"] and "x-secret" not in seen
    for answer_headers in (headers, too_big[1], hello[1]):
        assert answer_headers["X-Frame-Options"] == "DENY"
        assert answer_headers["X-Served-For"] == f"127.0.0.1:{gw.ports['public']}"
        assert answer_headers.getall("Link") == ["</a.css>; rel=preload"]
        assert "Server" not in answer_headers
    assert too_big[0] == 413  # the gateway's own refusals get the rules too
    assert hello[:1] == (200,) and hello[2] == b"hi"


@pytest.mark.parametrize(
    ("rules", "path", "message"),
    [
        ({"request": {"set": {"X-Forwarded-For": "1.2.3.4"}}}, "routes[0].headers.request",
         "x-forwarded-for: set by the gateway itself, not by rules"),
        ({"request": {"remove": ["Via"]}}, "routes[0].headers.request",
         "via: set by the gateway itself, not by rules"),
        ({"response": {"set": {"Content-Length": "1"}}}, "routes[0].headers.response",
         "content-length: set by the gateway itself, not by rules"),
        ({"response": {"set": {"X-A": "{cookie}"}}}, "routes[0].headers.response.set",
         "'X-A': unknown placeholder {cookie} (known: {client_ip}, {host}, {request_id}, "
         "{trace_id})"),
        ({"response": {"set": {"X-A": "a\r\nSet-Cookie: x=1"}}}, "routes[0].headers.response.set",
         "'X-A': the value must not contain CR, LF or NUL"),
    ],
)  # fmt: skip
def test_header_rules_cannot_forge_what_the_gateway_writes(
    tmp_path: Path, rules: dict[str, Any], path: str, message: str
) -> None:
    config = with_routes(
        base_config(tmp_path),
        {"name": "app", "headers": rules, "proxy": {"upstreams": ["http://a"]}},
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config).encode(), env={})
    assert [(i.path, i.message) for i in caught.value.issues] == [(path, message)]


async def test_ip_lists_use_the_client_address_trusted_proxies_vouch_for(tmp_path: Path) -> None:
    config = with_routes(
        base_config(tmp_path, trusted_proxies=["127.0.0.1/32"]),
        {"name": "office", "ip_allow": ["10.1.0.0/16", "2001:db8::/32"], "ip_deny": ["10.1.9.0/24"],
         "respond": {"body": "in"}},
    )  # fmt: skip
    async with in_process_gateway(config, tmp_path) as gw:

        async def status_for(forwarded: str | None) -> tuple[int, bytes]:
            headers = {"X-Forwarded-For": forwarded} if forwarded else {}
            status, _, body = await fetch(gw.url("/"), headers=headers)
            return status, body

        assert await status_for("10.1.2.3") == (200, b"in")
        assert await status_for("2001:db8::7") == (200, b"in")
        refused = (403, b"403 Forbidden: client address not allowed on this route\n")
        assert await status_for("10.1.9.9") == refused  # deny wins
        assert await status_for("10.2.0.1") == refused
        assert await status_for(None) == refused  # the proxy itself: 127.0.0.1
        # A forged hop left of an untrusted one changes nothing.
        assert await status_for("10.1.2.3, 192.0.2.1") == refused


async def test_basic_auth_challenge_login_cache_and_failure_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        checks.append(password)
        return checkpw(password, hashed)

    monkeypatch.setattr(basic.bcrypt, "checkpw", counting)
    auth = {"realm": "admin area", "users": [{"username": "ann", "password_hash": HASH}],
            "failures_per_minute": 3}  # fmt: skip
    config = with_routes(
        base_config(tmp_path), {"name": "admin", "basic_auth": auth, "respond": {"body": "ok"}}
    )
    async with in_process_gateway(config, tmp_path) as gw:
        anonymous = await fetch(gw.url("/"))
        good = [await fetch(gw.url("/"), headers=basic_header("ann", PASSWORD)) for _ in range(3)]
        bad_user = await fetch(gw.url("/"), headers=basic_header("bob", PASSWORD))
        malformed = await fetch(gw.url("/"), headers={"Authorization": "Basic !!!"})
        bad = [await fetch(gw.url("/"), headers=basic_header("ann", "wrong")) for _ in range(3)]
        still_good = await fetch(gw.url("/"), headers=basic_header("ann", PASSWORD))
        log = gw.access_log()
    challenge = 'Basic realm="admin area", charset="UTF-8"'
    assert (anonymous[0], anonymous[1]["WWW-Authenticate"]) == (401, challenge)
    assert anonymous[2] == b"401 Unauthorized: authentication required\n"
    assert [(s, b) for s, _, b in good] == [(200, b"ok")] * 3
    assert checks == [PASSWORD.encode(), PASSWORD.encode(), b"wrong", b"wrong"]  # cached after one
    assert (bad_user[0], bad_user[2]) == (401, b"401 Unauthorized: wrong user name or password\n")
    assert malformed[0] == 401
    # bob and two wrong passwords: three failures; the fourth attempt is not even checked.
    assert [s for s, _, _ in bad] == [401, 401, 429]
    assert bad[2][1]["Retry-After"].isdigit() and "WWW-Authenticate" not in bad[2][1]
    assert still_good[0] == 429  # the client is slowed down whatever it sends now
    assert [r.get("user") for r in log[1:4]] == ["ann"] * 3
    assert "user" not in log[0]


@contextlib.asynccontextmanager
async def auth_service() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A real auth service: ``Bearer good`` passes with X-Auth-User, anything else is
    sent to a login page."""
    seen: list[dict[str, str]] = []

    async def check(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.headers.get("Authorization") == "Bearer good":
            return web.Response(text="", headers={"X-Auth-User": "ann", "X-Other": "no"})
        return web.Response(
            status=302, text="to login", headers={"Location": "/login", "Set-Cookie": "n=1"}
        )

    app = web.Application()
    app.router.add_get("/verify", check)
    async with serving(app) as url:
        yield f"{url}/verify", seen


async def test_forward_auth_lets_through_copies_headers_and_relays_refusals(
    tmp_path: Path,
) -> None:
    async with backends("a") as (a,), auth_service() as (url, seen):
        forward = {"url": url, "copy_headers": ["X-Auth-User"]}
        config = with_routes(
            base_config(tmp_path),
            {"name": "down", "match": {"path_prefix": "/down"}, "proxy": {"upstreams": [a.url]},
             "forward_auth": {"url": "http://127.0.0.1:9/verify", "timeout": 2}},
            {"name": "app", "forward_auth": forward, "proxy": {"upstreams": [a.url]}},
        )  # fmt: skip
        async with in_process_gateway(config, tmp_path) as gw:
            allowed = await fetch(
                gw.url("/p?q=1"), "POST", data=b"body",
                headers={"Authorization": "Bearer good", "X-Auth-User": "forged"},
            )  # fmt: skip
            refused = await fetch(gw.url("/p"), headers={"X-Auth-User": "forged"})
            down = await fetch(gw.url("/down"))
    assert allowed[0] == 200
    upstream = upstream_saw(allowed[2])
    assert upstream["x-auth-user"] == ["ann"] and "x-other" not in upstream
    assert json.loads(allowed[2])["body_length"] == 4
    asked = seen[0]
    assert (asked["X-Forwarded-Method"], asked["X-Forwarded-Uri"]) == ("POST", "/p?q=1")
    assert (asked["X-Forwarded-For"], asked["Authorization"]) == ("127.0.0.1", "Bearer good")
    assert "Content-Length" not in asked  # a GET without the client's body
    assert (refused[0], refused[1]["Location"], refused[1]["Set-Cookie"], refused[2]) == (
        302, "/login", "n=1", b"to login"
    )  # fmt: skip
    assert a.hits == 1  # the refused request never reached the upstream
    assert down[0] == 502 and down[2].startswith(b"502 Bad Gateway: auth service unavailable")


async def test_forward_auth_that_does_not_answer_in_time_is_504(tmp_path: Path) -> None:
    async with backends("a") as (a,), recording_backend() as (auth_url, auth):
        forward = {"url": f"{auth_url}/verify", "timeout": 0.2}
        config = with_routes(
            base_config(tmp_path), {"name": "app", "forward_auth": forward,
                                    "proxy": {"upstreams": [a.url]}}
        )  # fmt: skip
        async with in_process_gateway(config, tmp_path) as gw:
            status, _, body = await fetch(gw.url("/p"))
    assert (status, body) == (504, b"504 Gateway Timeout: auth service timed out\n")
    assert auth.received[0].startswith(b"GET /verify HTTP/1.1\r\n")  # asked, never answered
    assert a.hits == 0


def test_check_names_each_routes_middleware_and_weighted_targets(tmp_path: Path) -> None:
    route = {"name": "admin", "ip_allow": ["10.0.0.0/8"], "compress": {},
             "basic_auth": {"users": [{"username": "ann", "password_hash": HASH}]},
             "proxy": {"upstreams": [{"url": "http://10.0.0.5:8080", "weight": 9},
                                     "http://10.0.0.6:8080"], "circuit_breaker": {}}}  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(with_routes(base_config(tmp_path), route)))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert (
        "  admin        host=* path=/ -> proxy http://10.0.0.5:8080*9,http://10.0.0.6:8080 "
        "(round_robin) circuit breaker middleware=ip_allow,basic_auth,compress"
    ) in result.stdout.splitlines()


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ({"ip_allow": ["10.0.0.0/33"]}, "routes[0].ip_allow[0]",
         "'10.0.0.0/33' is not an IP address or CIDR"),
        ({"basic_auth": {"users": [{"username": "ann", "password_hash": "plain"}]}},
         "routes[0].basic_auth.users[0].password_hash",
         "is not a bcrypt hash ($2b$<cost>$<53 characters>)"),
        ({"forward_auth": {"url": "ftp://auth/verify"}}, "routes[0].forward_auth.url",
         "'ftp://auth/verify' is not an http:// or https:// URL without a query"),
        ({"forward_auth": {"url": "http://auth/v", "copy_headers": ["X-Forwarded-For"]}},
         "routes[0].forward_auth.copy_headers", "x-forwarded-for: set by the gateway itself"),
        ({"compress": {"encodings": ["deflate"]}}, "routes[0].compress.encodings[0]",
         "Input should be 'zstd', 'br' or 'gzip'"),
        ({"proxy": {"upstreams": [{"url": "http://a", "weight": 0}]}},
         "routes[0].proxy.upstreams[0].weight", "Input should be greater than or equal to 1"),
    ],
)  # fmt: skip
def test_check_refuses_bad_middleware_values_naming_the_key(
    tmp_path: Path, extra: dict[str, Any], path: str, message: str
) -> None:
    route = {"name": "app", "proxy": {"upstreams": ["http://a"]}, **extra}
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(with_routes(base_config(tmp_path), route)).encode(), env={})
    assert (path, message) in [(i.path, i.message) for i in caught.value.issues]
