"""Experiments (gateway.experiments): assignment and statistics without a socket, the
config's errors, and variants end to end through real backends to Apache Kafka."""
