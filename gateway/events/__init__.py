"""Events: the envelope, the delivery pipeline to Kafka, and the disk spool under it."""
