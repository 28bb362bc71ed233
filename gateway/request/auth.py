"""HTTP Basic credentials (RFC 7617), as tracking clients send their write key."""

from __future__ import annotations

import base64
import binascii


def basic_user(header: str | None) -> str | None:
    """The user part of ``Authorization: Basic ...``, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return None


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """User and password of ``Authorization: Basic ...``, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if colon else None
