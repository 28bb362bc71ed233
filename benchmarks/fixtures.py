"""What a scenario needs besides the server under test, set up once and shared by every
server and round: the files it serves, and for proxy scenarios the nginx backend.

One backend for all three servers means each proxies to the very same upstream; it runs
as long as its scenario, and its CPU is not counted as the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import random
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from benchmarks.configs import backend_site
from benchmarks.machine import Tools
from benchmarks.servers import running

KIB = 1024
MIB = 1024 * KIB
# The files every scenario's directory holds, by name: static and proxied downloads.
FILES = {"1k.bin": KIB, "1m.bin": MIB, "10k.json": 10 * KIB}
BACKEND_BODY = "hello from the backend\n"
# The backend's cacheable answer (proxy_cached): 1 KiB of text.
CACHEABLE_BODY = ("cacheable answer " * 61)[:1023] + "\n"


def file_bytes(name: str) -> bytes:
    """The content of fixture file ``name``: pseudo-random, so it neither compresses nor
    repeats and an offset or truncation shows in the exact-bytes check, yet the same on
    every run. A ``.json`` file is an API answer instead: records that compress as JSON
    does, padded to the exact size."""
    rng = random.Random(name)
    if name.endswith(".json"):
        size = FILES[name]
        records: list[dict[str, object]] = []
        while len(body := orjson.dumps(records)) < size - 200:
            user, score = f"user {rng.randrange(10**6)}", round(rng.random(), 4)
            records.append({"id": len(records), "name": user, "on": score < 0.5, "score": score})
        return body[:-1] + b', "' + b"x" * (size - len(body) - 4) + b'"]'
    return rng.randbytes(FILES[name])


@dataclass(frozen=True, slots=True)
class Fixtures:
    """A scenario's shared setup: the directory of ``FILES`` and the backend's address."""

    files: Path
    backend: str | None = None  # "127.0.0.1:PORT", for scenarios that proxy
    # (chain, key): one self-signed certificate every server uses in HTTPS scenarios.
    certificate: tuple[str, str] = ("", "")
    redis: str | None = None  # "redis://127.0.0.1:PORT/0", for scenarios with shared limits


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
async def redis_server() -> AsyncIterator[str]:
    """Debian's redis-server on a free loopback port, nothing persisted; its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def prepared(
    directory: Path,
    *,
    backend: bool,
    tools: Tools,
    workers: int,
    capacity: int,
    redis: bool = False,
) -> AsyncIterator[Fixtures]:
    """Write ``FILES`` under ``directory``; with ``backend``, also start nginx serving them
    (and ``BACKEND_BODY`` at ``SMALL_PATH``); with ``redis``, a redis-server; all stopped
    on exit."""
    files = directory / "files"
    await asyncio.to_thread(_write_files, files)
    certificate = await asyncio.to_thread(_write_certificate, directory / "tls")
    if redis:
        async with redis_server() as url:
            yield Fixtures(files, certificate=certificate, redis=url)
        return
    if not backend:
        yield Fixtures(files, certificate=certificate)
        return
    workdir = directory / "backend"
    workdir.mkdir()
    site = backend_site(files, BACKEND_BODY, CACHEABLE_BODY)
    async with running(
        "nginx", site, workers=workers, capacity=capacity, tools=tools, workdir=workdir
    ) as server:
        yield Fixtures(files, f"127.0.0.1:{server.port}", certificate)


def _write_certificate(directory: Path) -> tuple[str, str]:
    """A P-256 key and a self-signed certificate for localhost and 127.0.0.1 (Caddy picks
    a certificate by the connection's IP when the client sends no usable SNI)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    chain, key_path = directory / "cert.pem", directory / "key.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(chain), str(key_path)


def _write_files(files: Path) -> None:
    files.mkdir(parents=True)
    for name in FILES:
        (files / name).write_bytes(file_bytes(name))
        (files / name).chmod(0o644)
    # Readable by nginx's workers, which run as nobody when nginx is started as root.
    for path in (files.parent, files):
        path.chmod(0o755)
