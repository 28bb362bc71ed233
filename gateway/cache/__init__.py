"""The edge cache: an RFC 9111 shared cache between the request path and the proxy
handler. ``machine`` runs a cached route's request through its states, ``rules`` holds
the RFC's decisions as plain functions, ``store`` and ``shared`` are the memory and
Redis tiers, ``service`` is what one worker owns, ``purge`` how purges reach every
worker, ``api`` the admin endpoint."""
