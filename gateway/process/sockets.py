"""The listening sockets: how they are bound, and which config keys they were bound for.

The supervisor binds them once per worker slot and keeps them; workers inherit them and
pair them with the config's listeners in order, which is why a change to those keys
needs a restart.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from gateway.config import Config, Listener

LISTEN_BACKLOG = 4096  # a burst of new connections waits here rather than being dropped

# What the inherited sockets were bound for: workers pair them with the listeners in
# order, so under a supervisor a reload that changes these is refused outright.
SOCKET_KEYS: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("server.listeners", lambda c: c.server.listeners),
    ("server.workers", lambda c: c.server.worker_count),
)
# Keys whose change a reload cannot apply to a running process (sockets, parser limits,
# the log file); a reload still applies the rest and says what waits for a restart.
RESTART_KEYS: tuple[tuple[str, Callable[[Config], object]], ...] = (
    *SOCKET_KEYS,
    ("server.limits.max_header_bytes", lambda c: c.server.limits.max_header_bytes),
    ("server.limits.max_headers", lambda c: c.server.limits.max_headers),
    ("server.access_log.path", lambda c: c.server.access_log.path),
    ("kafka", lambda c: c.kafka),
    ("rate_limits.backend", lambda c: c.rate_limits.backend),
    ("tls.certificates", lambda c: c.tls.certificates if c.tls else None),
    ("tls.acme", lambda c: c.tls.acme if c.tls else None),
    ("spool", lambda c: c.spool),
    ("tracking.queue_size", lambda c: c.tracking.queue_size),
    ("tracking.queue_bytes", lambda c: c.tracking.queue_bytes),
    ("redirects.topic", lambda c: c.redirects.topic if c.redirects else None),
    ("redirects.file", lambda c: c.redirects.file if c.redirects else None),
    ("cache", lambda c: c.cache),
)


def bind_listener(listener: Listener, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket for ``listener``; the owner hands it to workers."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listener.host, listener.port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def sockets_changed(running: Config, new: Config) -> str:
    """The first of SOCKET_KEYS that ``new`` changes ('' if none)."""
    return next((key for key, get in SOCKET_KEYS if get(running) != get(new)), "")
