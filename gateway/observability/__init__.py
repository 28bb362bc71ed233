"""Metrics, the access log and health/readiness: what the gateway says about itself."""
