"""Growth experiments at the edge (``experiments`` in the config): sticky, stateless
variant assignment, what a variant changes about a request, exposure events, and the
statistics to trust a split. Plain objects the request path calls; testable without a
socket.

- ``assign``: a visitor's bucket and the variant it falls in, per experiment;
- ``cookie``: the JavaScript-readable cookie of a visitor's assignments;
- ``step``: the route step: decide, change the request, expose, set the cookie;
- ``stats``: exposures per variant and day, and the sample-ratio-mismatch check.
"""
