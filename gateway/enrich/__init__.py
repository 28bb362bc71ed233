"""Enrichment and privacy for events (``tracking.enrich``): each step a plain object the
event builder calls, testable without a socket.

- ``device``: browser, OS and device from User-Agent and Client Hints;
- ``bots``: a verdict from crawler-user-agents, ua-parser and the user's own patterns;
- ``geo``: geography and network from MaxMind-format databases, reloaded when replaced;
- ``campaign``: utm_* and click ids; the referrer's host and medium;
- ``plans``: JSON Schema tracking plans (and Iglu schemas for Snowplow);
- ``privacy``: IP masking, consent and GPC, PII hashing;
- ``enricher``: the steps in order, for one event.
"""
