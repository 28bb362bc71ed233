"""The settings analytics.js (analytics-next) loads before it sends anything:
``GET <cdnURL>/v1/projects/<writeKey>/settings``. Pointed at the gateway, the browser
learns to send its calls back to the same route, first-party.

Only what analytics-next reads at load is given: the Segment.io destination with its
``apiKey``, ``apiHost`` (host and route, no scheme, as Segment writes it) and
``protocol``; a plan that enables every call; no edge function; no remote plugins; and
a metrics sample rate of 0, so the browser does not report its own metrics elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def settings(
    write_key: str, api_host: str, protocol: str, integrations: Mapping[str, Any]
) -> dict[str, Any]:
    """The settings document for ``write_key``; ``integrations``: the route's extra
    destination settings, beside (never replacing) Segment.io."""
    return {
        "integrations": {
            **integrations,
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            },
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }
