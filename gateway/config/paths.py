"""Whether the files and directories a config names can be used, checked before serving.

A path a worker would trip over at start-up (a CA file that is not there, a log in a
missing directory, a spool under a regular file) is a config error with its key path,
not a traceback in every worker restarted in a loop (fault run F5).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path


def ca_file_issue(path: str) -> str | None:
    """Why ``path`` cannot serve as a bundle of trusted CA certificates, if it cannot."""
    if not os.path.isfile(path):
        return f"{path}: no such file"
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        return f"{path}: not a PEM bundle of CA certificates ({exc})"
    return None


def writable_file_issue(path: str) -> str | None:
    """Why the gateway could not create or append to the file ``path``, if it could not."""
    target = Path(path)
    if target.is_dir():
        return f"{path}: is a directory"
    if target.exists():
        return None if os.access(target, os.W_OK) else f"{path}: not writable"
    parent = target.parent
    if not parent.is_dir():
        return f"{path}: directory {str(parent)!r} does not exist"
    return None if os.access(parent, os.W_OK) else f"{path}: directory {parent} not writable"


def directory_issue(path: str) -> str | None:
    """Why ``path`` could not be used or created as a directory, if it could not: the
    nearest part of it that exists must be a directory the gateway may write in."""
    target = Path(path).absolute()
    for part in (target, *target.parents):
        if part.exists():
            if not part.is_dir():
                return f"{path}: {str(part)!r} is a file, not a directory"
            if not os.access(part, os.W_OK | os.X_OK):
                return f"{path}: {part} not writable"
            return None
    return None


def certificate_pair_issue(cert: str, key: str, password: str | None = None) -> str | None:
    """Why ``cert`` and ``key`` (decrypted with ``password``) cannot be used together for
    TLS, if they cannot: the certificate must be PEM and the key its own."""
    from cryptography import x509  # only configs with certificate files need it

    try:
        with open(cert, "rb") as handle:
            x509.load_pem_x509_certificate(handle.read())
    except (OSError, ValueError) as exc:
        return f"{cert}: not a readable PEM certificate ({exc})"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password)
    except (OSError, ssl.SSLError) as exc:
        return f"{cert} / {key}: {exc}"
    return None


def token_file_issue(path: str) -> str | None:
    """Why ``path`` holds no bearer token, if it does not."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror})"
    return None if token else f"{path}: empty"
