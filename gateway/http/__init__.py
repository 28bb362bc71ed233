"""Wire protocols: the accept loop, the aiohttp HTTP/1.1 shell with its edge limits,
and the rules it applies to request heads before the request path sees them."""
