"""What a scenario needs besides the server under test, set up once and shared by every
server and round: the files it serves, and for proxy scenarios the nginx backend.

One backend for all three servers means each proxies to the very same upstream; it runs
as long as its scenario, and its CPU is not counted as the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.configs import backend_site
from benchmarks.machine import Tools
from benchmarks.servers import running

KIB = 1024
MIB = 1024 * KIB
# The files every scenario's directory holds, by name: static and proxied downloads.
FILES = {"1k.bin": KIB, "1m.bin": MIB}
BACKEND_BODY = "hello from the backend\n"


def file_bytes(name: str) -> bytes:
    """The content of fixture file ``name``: pseudo-random, so it neither compresses nor
    repeats and an offset or truncation shows in the exact-bytes check, yet the same on
    every run."""
    return random.Random(name).randbytes(FILES[name])


@dataclass(frozen=True, slots=True)
class Fixtures:
    """A scenario's shared setup: the directory of ``FILES`` and the backend's address."""

    files: Path
    backend: str | None = None  # "127.0.0.1:PORT", for scenarios that proxy


@contextlib.contextmanager
def work_directory() -> Iterator[Path]:
    """A temporary directory for a whole run, removed at the end.

    Traversable by others: nginx started as root runs its workers as nobody, and they must
    reach the files they serve and the temp paths under their prefix.
    """
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        os.chmod(tmp, 0o711)
        yield Path(tmp)


@contextlib.asynccontextmanager
async def prepared(
    directory: Path, *, backend: bool, tools: Tools, workers: int, capacity: int
) -> AsyncIterator[Fixtures]:
    """Write ``FILES`` under ``directory``; with ``backend``, also start nginx serving them
    (and ``BACKEND_BODY`` at ``SMALL_PATH``), stopped on exit."""
    files = directory / "files"
    await asyncio.to_thread(_write_files, files)
    if not backend:
        yield Fixtures(files)
        return
    workdir = directory / "backend"
    workdir.mkdir()
    site = backend_site(files, BACKEND_BODY)
    async with running(
        "nginx", site, workers=workers, capacity=capacity, tools=tools, workdir=workdir
    ) as server:
        yield Fixtures(files, f"127.0.0.1:{server.port}")


def _write_files(files: Path) -> None:
    files.mkdir(parents=True)
    for name in FILES:
        (files / name).write_bytes(file_bytes(name))
        (files / name).chmod(0o644)
    # Readable by nginx's workers, which run as nobody when nginx is started as root.
    for path in (files.parent, files):
        path.chmod(0o755)
