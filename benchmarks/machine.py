"""The external tools a run needs and a description of the machine it ran on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "sudo apt-get install wrk nginx-light caddy nghttp2-client varnish"
# nginx lives in /usr/sbin, which is often not on a normal user's PATH.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
_TOOL_NAMES = ("wrk", "nginx", "caddy", "h2load", "varnishd")


@dataclass(frozen=True, slots=True)
class Tools:
    """Absolute paths of the load generators and the two reference servers."""

    wrk: str
    nginx: str
    caddy: str
    h2load: str = ""  # nghttp2's, for the HTTP/2 scenarios
    varnishd: str = ""  # Varnish, the caching peer of the proxy_cached scenarios


class MissingTools(Exception):
    """Some of wrk, nginx and caddy are not installed; ``names`` says which."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"missing {', '.join(names)} (install with: {INSTALL_HINT})")


def find_tools() -> Tools:
    """Locate wrk, nginx and caddy, or raise :class:`MissingTools` naming every one absent."""
    found = {name: shutil.which(name) or shutil.which(name, path=_SBIN) for name in _TOOL_NAMES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise MissingTools(missing)
    return Tools(**{name: str(path) for name, path in found.items()})


@dataclass(frozen=True, slots=True)
class Machine:
    """What a reader needs to compare two result files: hardware and software versions."""

    date: str
    cpus: int
    cpu_model: str
    kernel: str
    python: str
    aiohttp: str
    uvloop: str
    gateway: str
    nginx: str
    caddy: str
    wrk: str


def describe_machine(tools: Tools, date: str) -> Machine:
    """Collect CPU, kernel and every component's version (each tool asked once, bounded)."""
    return Machine(
        date=date,
        cpus=os.cpu_count() or 1,
        cpu_model=_cpu_model(),
        kernel=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        aiohttp=_dist_version("aiohttp"),
        uvloop=_dist_version("uvloop"),
        gateway=_dist_version("edge-gateway"),
        # nginx -v prints to stderr; wrk --version prints usage after the version and exits 1.
        nginx=_first_line([tools.nginx, "-v"]),
        caddy=_first_line([tools.caddy, "version"]),
        wrk=_first_line([tools.wrk, "--version"]),
    )


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"
