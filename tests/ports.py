"""Ports for real components that take an address rather than a bound socket."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time


def free_port() -> int:
    """An ephemeral loopback port nobody holds (bound, then released for the child)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: every socket stays bound until all are
    picked, so the kernel cannot hand the same port out twice."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def wait_listening(
    port: int, process: subprocess.Popen[bytes], name: str, limit: float = 20.0
) -> None:
    """Until ``process`` accepts TCP connections on ``port``; raise if it exits first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{name} did not listen on {port} within {limit}s")
