"""The request path: route lookup, limits, the handler call, error pages, client address,
CORS and response header rules. It knows nothing of the wire protocol."""
