"""The docs hold: every config key documented once in the configuration reference and
nothing documented that the config does not have, the published schema is the one the
models give, and every link between pages lands on a page and heading that exist."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jsonschema
import orjson
import pytest

from gateway.config import load_config
from gateway.config.schema import SCHEMA_KEY, config_schema, key_paths
from tests.support import in_process_gateway

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "configuration.md"
# A variant's proxy is a route's proxy object: its keys are documented there.
SHARED = {"experiments[].variants[].proxy": "routes[].proxy"}
_KEY = re.compile(r"`([A-Za-z_$][\w\[\].*]*)`")


def documented_rows(text: str) -> Iterator[tuple[str, str]]:
    """(key path, its row) for each key in the first cell of a reference table row. The
    keys of a table are relative to the last backticked name in the heading above it."""
    prefix = ""
    for line in text.splitlines():
        if line.startswith("#"):
            names = re.findall(r"`([^`]+)`", line)
            prefix = names[-1] if names else ""
        elif line.startswith("| `"):
            first, _, rest = line[2:].partition(" | ")
            for key in _KEY.findall(first):
                yield (f"{prefix}.{key}" if prefix else key), rest


def _keys() -> list[str]:
    return list(key_paths(config_schema(), SHARED))


def _undocumented(keys: list[str], rows: dict[str, list[str]]) -> list[str]:
    """A key is documented by its own row; by its parent's row naming it (``{"name",
    "max_age"}`` in the default of ``cookies.visitor``); or, an object, by all its keys."""

    def children(key: str) -> list[str]:
        return [k for k in keys if re.fullmatch(re.escape(key) + r"(\[\]|\.\*)?\.[^.]+", k)]

    def documented(key: str) -> bool:
        if key in rows:
            return True
        parent, _, name = key.rpartition(".")
        for holder in (parent, parent.removesuffix("[]"), parent.removesuffix(".*")):
            if any(f'"{name}"' in row or f"`{name}`" in row for row in rows.get(holder, ())):
                return True
        below = children(key)
        return bool(below) and all(documented(k) for k in below)

    return [key for key in keys if not documented(key)]


def test_every_config_key_is_documented_once_in_the_reference() -> None:
    rows: dict[str, list[str]] = {}
    for key, row in documented_rows(REFERENCE.read_text()):
        rows.setdefault(key, []).append(row)
    keys = _keys()
    assert _undocumented(keys, rows) == []
    assert [key for key, found in rows.items() if len(found) > 1] == []
    maps = {key.rpartition(".*")[0] + ".*" for key in keys if ".*" in key}
    assert [key for key in rows if key not in keys and key not in maps] == [SCHEMA_KEY]


def test_the_check_finds_a_key_the_reference_leaves_out() -> None:
    text = REFERENCE.read_text().replace("| `redis.timeout_ms` |", "| timeout |")
    rows = {key: [row] for key, row in documented_rows(text)}
    assert _undocumented(_keys(), rows) == ["cache.redis.timeout_ms"]


def test_the_published_schema_is_the_one_the_models_give() -> None:
    published = orjson.loads((DOCS / "config.schema.json").read_bytes())
    assert published == config_schema()
    assert orjson.loads((ROOT / "config.json").read_bytes())[SCHEMA_KEY] == (
        "docs/config.schema.json"
    )


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found: set[str] = set()
    fenced = False
    for line in page.read_text().splitlines():
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("#"):
            anchor = _anchor(line.lstrip("#"))
            n = 0
            while (candidate := anchor if n == 0 else f"{anchor}-{n}") in found:
                n += 1
            found.add(candidate)
    return found


def test_every_link_between_pages_lands() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            lands = linked.exists() and (
                not anchor or linked.suffix != ".md" or anchor in _anchors(linked)
            )
            if not lands:
                broken.append(f"{page.name}: {target}")
    assert broken == []


EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
# The secrets the examples read from the environment, long enough to pass their checks.
SECRETS = {name: "example-secret-0123456789" for name in (
    "SEGMENT_WRITE_KEY", "INTAKE_PASSWORD", "GATEWAY_ADMIN_TOKEN", "PII_SALT")}  # fmt: skip


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_every_example_is_a_config_gateway_check_accepts(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(example.parent)  # relative paths (a static root) are the example's
    load_config(example, env=SECRETS)
    assert orjson.loads(example.read_bytes())[SCHEMA_KEY] == "../docs/config.schema.json"


@pytest.mark.parametrize("config", [ROOT / "config.json", *EXAMPLES], ids=lambda p: p.name)
def test_the_schema_accepts_every_shipped_config(config: Path) -> None:
    schema = orjson.loads((DOCS / "config.schema.json").read_bytes())
    jsonschema.validate(orjson.loads(config.read_bytes()), schema)


def test_the_schema_refuses_what_the_gateway_refuses() -> None:
    schema = orjson.loads((DOCS / "config.schema.json").read_bytes())
    config = orjson.loads((ROOT / "config.json").read_bytes())
    for broken in (
        {**config, "sever": {}},  # an unknown key
        {**config, "server": {**config["server"], "workers": "2"}},  # a string for a number
        {**config, "routes": [{"name": "x", "respond": {"status": 99}}]},  # out of range
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_every_page_is_on_both_maps() -> None:
    pages = {page.name for page in DOCS.glob("*.md")} - {"README.md"}
    readme = (ROOT / "README.md").read_text()
    index = (DOCS / "README.md").read_text()
    assert sorted(page for page in pages if f"(docs/{page})" not in readme) == []
    assert sorted(page for page in pages if f"({page})" not in index) == []


async def test_the_readme_redirect_link_job_answers_as_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README job 4: examples/redirect-links.json, then /l/spring."""
    config = orjson.loads((ROOT / "examples" / "redirect-links.json").read_bytes())
    for listener in config["server"]["listeners"]:
        listener.update(host="127.0.0.1", port=0)
    config["redirects"]["file"] = str(tmp_path / "links.jsonl")
    config["spool"] = {"dir": str(tmp_path / "spool")}
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", SECRETS["GATEWAY_ADMIN_TOKEN"])
    async with in_process_gateway(config, tmp_path) as gw:
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.url("/l/spring"), allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == (
                    "https://shop.example.com/sale?utm_source=mail&utm_campaign=spring"
                )
