"""HTTP Basic credentials (RFC 7617): tracking clients send their write key as the user,
intake clients a user and password."""

from __future__ import annotations

import base64
import binascii


def _decoded(header: str | None) -> str | None:
    """The ``user:password`` text of ``Authorization: Basic ...``, or None."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def basic_user(header: str | None) -> str | None:
    """The user part of ``Authorization: Basic ...``, or None when absent or malformed."""
    decoded = _decoded(header)
    return None if decoded is None else decoded.partition(":")[0]


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """User and password, or None when absent, malformed, or without a ``:``."""
    decoded = _decoded(header)
    if decoded is None or ":" not in decoded:
        return None
    user, _, password = decoded.partition(":")
    return user, password
