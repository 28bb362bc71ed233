"""ACME storage shared on Redis by a fleet (tls.acme.shared), against Pebble and a real
redis-server: one order per name while three instances start at once, a challenge
answered by an instance that did not order, a lock left by a holder that died, keys
encrypted at rest."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from gateway.config import AcmeShared, ConfigError, parse_config
from gateway.process.worker import Worker
from gateway.tls.issuer import self_signed
from gateway.tls.shared import SealedError, SharedStorage
from gateway.tls.storage import LockBusy
from tests.conftest import RedisServer
from tests.ports import free_ports
from tests.support import start_process, stop_process
from tests.tls.test_acme import (
    AcmeGateway,
    PebbleFactory,
    _counter,
    acme_config,
    bind_ports,
    https_get,
)

SECRET = "fleet-secret-0123456789"


def shared(redis_server: RedisServer) -> dict[str, Any]:
    return {"url": redis_server.url, "encryption_key": SECRET}


def instance_config(
    tmp_path: Path, ports: dict[str, int], pebble: Any, redis_server: RedisServer, **acme: Any
) -> dict[str, Any]:
    """One instance's config: its own folders, the fleet's Redis."""
    tmp_path.mkdir(exist_ok=True)
    return acme_config(tmp_path, ports, pebble, shared=shared(redis_server), **acme)


def split_pem(pem: bytes) -> tuple[bytes, bytes]:
    """self_signed's PEM (key first) as (certificate, key)."""
    marker = b"-----BEGIN CERTIFICATE-----"
    at = pem.index(marker)
    return pem[at:], pem[:at]


def storage(tmp_path: Path, redis_server: RedisServer, key: str = SECRET) -> SharedStorage:
    config = AcmeShared(url=redis_server.url, encryption_key=key)
    return SharedStorage(str(tmp_path / "copy"), config, order_timeout=90)


async def test_three_instances_started_together_order_each_name_once(
    tmp_path: Path, pebble_factory: PebbleFactory, redis_server: RedisServer
) -> None:
    # Three `gateway run` processes, each with its HTTPS and admin ports and its own
    # folder; all three listen on the one plain port Pebble validates on (SO_REUSEPORT),
    # so the CA reaches whichever instance the kernel picks.
    public, *own = free_ports(7)
    pebble = pebble_factory(http_port=public, tls_port=own[0])
    gateways = []
    try:
        configs = []
        for n in range(3):
            ports = {"public": public, "https": own[2 * n], "admin": own[2 * n + 1]}
            folder = tmp_path / f"instance{n}"
            config = instance_config(folder, ports, pebble, redis_server,
                                     domains=["a.test", "b.test"])  # fmt: skip
            config["server"]["listeners"][0]["host"] = "127.0.0.1"
            path = folder / "gateway.json"
            path.write_text(json.dumps(config))
            configs.append((path, ports))
        gateways = list(
            await asyncio.gather(
                *(start_process(path, workers=1, listeners=3) for path, _ in configs)
            )
        )
        context = pebble.client_context()
        serials: dict[str, set[int]] = {"a.test": set(), "b.test": set()}
        async with asyncio.timeout(60), aiohttp.ClientSession() as session:
            for _, ports in configs:
                admin = f"http://127.0.0.1:{ports['admin']}/_gateway/"
                while True:  # until this instance serves CA-issued certificates for both
                    async with session.get(admin + "certificates") as resp:
                        served = (await resp.json())["certificates"]
                    if all(not c["placeholder"] for c in served):
                        break
                    await asyncio.sleep(0.1)
                for name, seen in serials.items():
                    seen.add((await https_get(ports["https"], name, context))[0])
            orders = 0.0
            for _, ports in configs:
                metrics = f"http://127.0.0.1:{ports['admin']}/_gateway/metrics"
                async with session.get(metrics) as resp:
                    orders += _counter(await resp.text(), "issued")
    finally:
        for gateway in gateways:
            await stop_process(gateway)
    assert [len(seen) for seen in serials.values()] == [1, 1]  # one certificate per name
    assert orders == 2.0  # one order per name across the fleet


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
async def test_a_challenge_is_answered_by_an_instance_that_did_not_order(
    tmp_path: Path, pebble_factory: PebbleFactory, redis_server: RedisServer, challenge: str
) -> None:
    # Pebble validates on the second instance's ports only, and the second instance
    # does not have a.test in its config: the first's order for a.test can succeed only
    # through the answer the second read from Redis.
    first_sockets, first_ports = bind_ports()
    second_sockets, second_ports = bind_ports()
    pebble = pebble_factory(http_port=second_ports["public"], tls_port=second_ports["https"])
    workers = []
    for folder, ports, sockets, domain in (
        ("first", first_ports, first_sockets, "a.test"),
        ("second", second_ports, second_sockets, "b.test"),
    ):
        config = instance_config(
            tmp_path / folder, ports, pebble, redis_server, domains=[domain], challenge=challenge
        )
        parsed = parse_config(json.dumps(config).encode(), env=os.environ)
        workers.append(Worker(parsed, list(zip(parsed.server.listeners, sockets, strict=True))))
    first, second = workers
    try:
        async with first, second:
            await AcmeGateway(first, first_ports, pebble, tmp_path).issued("a.test")
            serial, _ = await https_get(first_ports["https"], "a.test", pebble.client_context())
            assert serial > 0
            assert _counter(first.metrics.render().decode(), "issued") == 1.0
    finally:
        for sock in (*first_sockets, *second_sockets):
            sock.close()


def test_a_lock_left_by_a_holder_that_died_expires(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    dead, alive = storage(tmp_path / "dead", redis_server), storage(tmp_path, redis_server)
    dead.lock_ttl = 0.5
    held = dead.lock(wait=False, name="a.test")
    held.__enter__()  # and never left: the process died holding it
    with pytest.raises(LockBusy), alive.lock(wait=False, name="a.test"):
        pass
    with alive.lock(wait=False, name="b.test"):  # another name is not held up by it
        pass
    time.sleep(0.6)
    with alive.lock(wait=False, name="a.test"):
        # The first holder coming back late does not release the new holder's lock.
        held.__exit__(None, None, None)
        with pytest.raises(LockBusy), dead.lock(wait=False, name="a.test"):
            pass


def test_a_ca_file_is_for_rediss_only(tmp_path: Path, redis_server: RedisServer) -> None:
    # redis-py refuses TLS options on a plain connection: they are given on rediss:// only.
    ca = tmp_path / "ca.pem"
    ca.write_bytes(split_pem(self_signed("ca.test", datetime.timedelta(days=1)))[0])
    config = AcmeShared(url=redis_server.url, encryption_key=SECRET, ca_file=str(ca))
    plain = SharedStorage(str(tmp_path / "copy"), config, order_timeout=90)
    with plain.lock(wait=False, name="a.test"):
        plain.write_account_key(b"key")
    assert plain.read_account_key() == b"key"
    secure = AcmeShared(url="rediss://r.test:6380", encryption_key=SECRET, ca_file=str(ca))
    assert secure.client_options()["ssl_ca_certs"] == str(ca)


def test_keys_are_encrypted_at_rest(tmp_path: Path, redis_server: RedisServer) -> None:
    cert, key = split_pem(self_signed("a.test", datetime.timedelta(days=7)))
    writer = storage(tmp_path / "writer", redis_server)
    writer.save_certificate("a.test", cert, key)
    writer.write_account_key(key)
    raw = redis.Redis.from_url(redis_server.url)
    stored = [raw.get("gwacme:key:a.test"), raw.get("gwacme:account")]
    assert all(value is not None and b"PRIVATE KEY" not in value for value in stored)
    assert raw.get("gwacme:cert:a.test") == cert  # the chain is public
    reader = storage(tmp_path / "reader", redis_server)
    info = reader.read_certificate("a.test")
    assert info is not None and info.names == ("a.test",)
    assert (tmp_path / "reader" / "copy" / "a.test" / "key.pem").read_bytes() == key
    assert reader.read_account_key() == key
    # Another key opens nothing, and stops there: ordering anew would replace the
    # fleet's key with one the other instances could not open.
    stranger = storage(tmp_path / "stranger", redis_server, key="another-secret-0123456")
    with pytest.raises(SealedError, match="encryption_key cannot open"):
        stranger.read_certificate("a.test")
    with pytest.raises(SealedError):
        stranger.read_account_key()
    assert not (tmp_path / "stranger" / "copy" / "a.test").exists()


@pytest.mark.parametrize(
    ("shared_config", "message"),
    [
        ({"url": "http://r:6379", "encryption_key": SECRET},
         "tls.acme.shared.url: must be redis://host:port[/db]"),
        ({"url": "redis://r:6379", "encryption_key": "short"},
         "tls.acme.shared.encryption_key: String should have at least 16 characters"),
        ({"url": "rediss://r:6379", "encryption_key": SECRET, "ca_file": "/nope.pem"},
         "tls.acme.shared.ca_file: /nope.pem: no such file"),
    ],
)  # fmt: skip
def test_shared_storage_settings_are_checked(
    tmp_path: Path, shared_config: dict[str, Any], message: str
) -> None:
    ports = {"public": 1, "https": 2, "admin": 3}

    class Directory:
        directory, ca_bundle = "https://ca.test/dir", None

    config = acme_config(tmp_path, ports, Directory(), shared=shared_config)
    del config["tls"]["acme"]["ca_bundle"]
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config).encode(), env={})
    assert message in str(caught.value)
