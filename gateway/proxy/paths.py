"""Request targets an upstream might read as a path other than the one the gateway
routed: the gateway has refused ``.``/``..`` segments (also percent-encoded) before
routing, but backends add readings of their own. Tomcat drops ``;params`` from a segment
(``/..;/``), IIS and other Windows servers take ``\\`` for ``/``, some decode twice
(``%252e`` → ``%2e`` → ``.``) or accept overlong UTF-8 (``%c0%ae`` for ``.``), and a NUL
ends a C string. ``proxy.strict_paths`` (on by default) refuses all of these with 400.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from gateway.config import Proxy

# Percent-encoded: a backslash, a NUL, an overlong UTF-8 lead byte (C0/C1, E0 80, F0 80),
# or an encoded "%" in front of a dot, slash, backslash or NUL (read twice, they become one).
_ENCODED = re.compile(r"%(?:5c|00|c0|c1|e0%80|f0%80|25(?:2e|2f|5c|00))", re.IGNORECASE)


def ambiguous_path(raw_path: str) -> str | None:
    """Why an upstream might read ``raw_path`` (still percent-encoded) as another path;
    None when it cannot."""
    path = raw_path.split("?", 1)[0]
    if "%" not in path and "\\" not in path and ";" not in path:
        return None  # the common path: none of the tricks is possible
    if "\\" in path:
        return "backslash in path"
    if match := _ENCODED.search(path):
        return f"{match.group(0)} in path"
    for segment in path.split("/"):
        if ";" in segment and unquote(segment.split(";", 1)[0]) in (".", ".."):
            return "dot segment with parameters in path"
    return None


def rewritten(raw_path: str, prefix: str, config: Proxy) -> str:
    """The request target sent upstream: the raw path (still percent-encoded), with the
    route's ``prefix`` stripped or replaced when configured."""
    if (config.strip_prefix or config.rewrite_prefix is not None) and prefix:
        rest = raw_path[len(prefix) :] if raw_path.startswith(prefix) else raw_path
        target = (config.rewrite_prefix or "").rstrip("/") + rest
        return target if target.startswith("/") else "/" + target
    return raw_path
