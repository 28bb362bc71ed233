"""Debian's Knot DNS as the authoritative server of a test zone that takes RFC 2136
updates signed with a TSIG key: what an ACME DNS-01 order updates and the CA queries."""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

from tests.ports import free_port, wait_listening

ZONE = "example.test"
KEY_NAME = "gateway"


class Knot:
    """``knotd`` serving ``ZONE`` on 127.0.0.1 (UDP and TCP on one port)."""

    def __init__(self, directory: Path) -> None:
        (directory / "db").mkdir(parents=True, exist_ok=True)  # journal and timers
        self.directory = directory
        self.port = free_port()
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        (directory / f"{ZONE}.zone").write_text(
            f"$ORIGIN {ZONE}.\n$TTL 60\n"
            f"@ SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 900 604800 60\n"
            f"@ NS ns1.{ZONE}.\nns1 A 127.0.0.1\n"
        )
        (directory / "knot.conf").write_text(f"""\
server:
    rundir: "{directory}"
    listen: 127.0.0.1@{self.port}
log:
  - target: stderr
    any: warning
database:
    storage: "{directory}/db"
key:
  - id: {KEY_NAME}
    algorithm: hmac-sha256
    secret: {self.secret}
acl:
  - id: updates
    key: {KEY_NAME}
    action: update
zone:
  - domain: {ZONE}
    storage: "{directory}"
    file: {ZONE}.zone
    acl: updates
""")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Knot:
        knotd = shutil.which("knotd") or "/usr/sbin/knotd"
        with open(self.directory / "knotd.log", "ab") as log:
            self.process = subprocess.Popen(
                [knotd, "-c", str(self.directory / "knot.conf")], stdout=log, stderr=log
            )
        wait_listening(self.port, self.process, "knotd")
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            process.wait(timeout=10)

    def txt(self, name: str) -> list[str]:
        """The TXT strings at ``name`` as the server answers them now."""
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=2)
        return [
            b"".join(item.strings).decode()
            for rrset in answer.answer
            for item in rrset
            if rrset.rdtype == dns.rdatatype.TXT
        ]
