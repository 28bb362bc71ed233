"""Enrichment steps (gateway.enrich): each step alone, the config's errors, and events
enriched end to end to Apache Kafka."""
