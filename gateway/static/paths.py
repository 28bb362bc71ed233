"""Request path → file path under a root, refusing every way out of the root.

Works on the raw (still percent-encoded) path and decodes it exactly once, so double
encoding stays literal. Refused: NUL and other control characters, backslashes, encoded
slashes, invalid or overlong UTF-8, ``.``/``..`` segments, hidden segments (unless
allowed), and absurd lengths. Symlinks are checked after resolution by the caller.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from gateway.request.errors import HTTPError

MAX_PATH = 4096
# Only unreserved characters and slashes, no segment starting with a dot.
_PLAIN = re.compile(r"(?:/(?!\.)[A-Za-z0-9_~\-][A-Za-z0-9_.~\-]*)*/?")
MAX_SEGMENTS = 64


def relative_segments(raw_path: str, prefix: str, *, allow_hidden: bool) -> tuple[str, ...]:
    """The path segments below ``prefix``; raises HTTPError 400/404 on anything unsafe."""
    path = raw_path.split("?", 1)[0]
    if len(path) > MAX_PATH:
        raise HTTPError(414, "path too long")
    base = prefix.rstrip("/")
    if base and path.startswith(base):
        path = path[len(base) :]
    if _PLAIN.fullmatch(path):
        # The common case, nothing encoded and no segment starting with a dot: no decoding.
        plain = tuple(s for s in path.split("/") if s)
        if len(plain) <= MAX_SEGMENTS:
            return plain
    segments: list[str] = []
    for raw in path.split("/"):
        if not raw:
            continue
        lowered = raw.lower()
        if "%2f" in lowered or "%5c" in lowered:
            raise HTTPError(400, "encoded slashes are not allowed in paths")
        try:
            segment = unquote_to_bytes(raw).decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise HTTPError(400, "path is not valid UTF-8") from None
        if any(ord(c) < 0x20 or c in "\\\x7f" for c in segment):
            raise HTTPError(400, "control characters or backslashes in path")
        if segment in (".", ".."):
            raise HTTPError(400, "dot segments are not allowed in paths")
        if segment.startswith(".") and not allow_hidden:
            raise HTTPError(404, "not found")
        segments.append(segment)
    if len(segments) > MAX_SEGMENTS:
        raise HTTPError(414, "path too deep")
    return tuple(segments)
