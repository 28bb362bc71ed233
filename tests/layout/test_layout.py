"""The package's shape: no import cycle, no module over 400 lines, few modules at the top,
and the aiolimiter internals the rate limiter reads still where it reads them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import aiolimiter

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def own_package(path: Path, module: str) -> bool:
    return path.name != "__init__.py" and module_name(path).startswith(module + ".")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every gateway module ``path`` imports when it runs, function-level imports included
    (those under ``if TYPE_CHECKING`` are for the type checker only, never run)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not own_package(path, node.module):  # its __init__ is already running
                found.add(node.module)
            # "from gateway.config import routes" imports the module gateway.config.routes.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {name: imports_of(path, modules) for name, path in paths.items()}
    # Importing a module runs its packages' __init__ first, unless the importer is inside
    # that package (whose __init__ is then already running).
    for name, imported in graph.items():
        parents = {
            ".".join(module.split(".")[:i])
            for module in imported
            for i in range(2, module.count(".") + 1)
        }
        own = {".".join(name.split(".")[:i]) for i in range(2, name.count(".") + 2)}
        imported |= (parents & modules) - own
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return [*stack[stack.index(child) :], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_no_import_cycle_among_gateway_modules() -> None:
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_over_400_lines() -> None:
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}


def test_at_most_8_modules_directly_under_the_package() -> None:
    assert len(list(PACKAGE.glob("*.py"))) <= 8


def test_config_imports_nothing_that_serves_requests() -> None:
    graph = import_graph()
    for name, imported in graph.items():
        if name.startswith("gateway.config"):
            outside = {m for m in imported if not m.startswith("gateway.config")}
            # The config's own links are validated as the link store will read them.
            links = {"gateway.links", "gateway.links.model", "gateway.links.safety"}
            assert outside <= links, (name, outside)


async def test_aiolimiter_internals_the_headers_read_are_still_there() -> None:
    # gateway.limits reads the bucket level aiolimiter keeps private (there is no public
    # one) for RateLimit-Remaining and Retry-After; pyproject pins the versions read.
    from gateway.limits.ratelimit import _Bucket

    bucket = _Bucket(4, 1.0)
    assert isinstance(bucket._level, float | int) and callable(bucket._leak)
    assert bucket.level() == 0
    await bucket.acquire()
    await bucket.acquire()
    assert 1.9 < bucket.level() <= 2
    assert aiolimiter.__version__.startswith(("1.1", "1.2", "1.3"))


# Capabilities whose libraries cost a worker memory (about 30 MiB together): imported by
# the code that builds them from the config (Kafka, shared limits, TLS and ACME, HTTP/2).
OPTIONAL = {"aiokafka", "redis", "hiredis", "acme", "josepy", "cryptography", "h2"}


def test_a_worker_imports_no_optional_capability_until_its_config_uses_it() -> None:
    code = (
        "import sys, gateway.process.worker, gateway.request.path;"
        "print(' '.join({name.split('.')[0] for name in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert OPTIONAL.isdisjoint(done.stdout.split()), OPTIONAL & set(done.stdout.split())
