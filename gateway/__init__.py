"""An asyncio edge gateway: TLS, rate limits, static files, reverse proxy, Kafka events."""

__version__ = "0.1.0"
