"""Let's Encrypt's test CA, Pebble (Debian package ``pebble``), started per test on
ephemeral ports, with ``pebble-challtestsrv`` as its DNS (every name is 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import trustme

from tests.ports import free_port, wait_listening


def require(binary: str) -> str:
    path = shutil.which(binary)
    assert path, f"{binary} is not installed (make test installs the Debian package pebble)"
    return path


class ChallTestSrv:
    """Pebble's DNS: A queries for any name answer 127.0.0.1, AAAA none."""

    def __init__(self) -> None:
        self.dns_port = free_port()
        self.management_port = free_port()
        self.process = subprocess.Popen(
            [require("pebble-challtestsrv"),
             "-dns01", f"127.0.0.1:{self.dns_port}",
             "-management", f"127.0.0.1:{self.management_port}",
             "-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv6", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_listening(self.management_port, self.process, "pebble-challtestsrv")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Pebble:
    """One Pebble CA validating HTTP-01 on ``http_port`` and TLS-ALPN-01 on ``tls_port``."""

    def __init__(
        self,
        directory: Path,
        dns_port: int,
        *,
        http_port: int,
        tls_port: int,
        nonce_reject: int = 0,
        eab_keys: dict[str, str] | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory_path = directory
        self.tls_ca = trustme.CA()
        server = self.tls_ca.issue_cert("localhost", "127.0.0.1")
        server.private_key_pem.write_to_path(str(directory / "pebble.key"))
        server.cert_chain_pems[0].write_to_path(str(directory / "pebble.pem"))
        self.ca_bundle = str(directory / "pebble-ca.pem")
        self.tls_ca.cert_pem.write_to_path(self.ca_bundle)
        self.port = free_port()
        self.management_port = free_port()
        config: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(directory / "pebble.pem"),
            "privateKey": str(directory / "pebble.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": eab_keys is not None,
        }
        if eab_keys is not None:
            config["externalAccountMACKeys"] = eab_keys
        (directory / "pebble.json").write_text(json.dumps({"pebble": config}))
        self._args = [
            require("pebble"), "-config", str(directory / "pebble.json"),
            "-dnsserver", f"127.0.0.1:{dns_port}",
        ]  # fmt: skip
        self._env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": str(nonce_reject),
            "PEBBLE_AUTHZREUSE": "0",
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> Pebble:
        with open(self.directory_path / "pebble.log", "ab") as log:
            self.process = subprocess.Popen(
                self._args, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_listening(self.port, self.process, "pebble")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            process.wait(timeout=10)

    def roots_pem(self) -> bytes:
        """The root and intermediate that sign what this Pebble issues (they change with
        every start)."""
        context = ssl.create_default_context(cafile=self.ca_bundle)
        base = f"https://127.0.0.1:{self.management_port}"
        pems = []
        for path in ("/roots/0", "/intermediates/0"):
            with urllib.request.urlopen(base + path, context=context, timeout=5) as resp:
                pems.append(resp.read())
        return b"".join(pems)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.load_verify_locations(cadata=self.roots_pem().decode())
        return context
