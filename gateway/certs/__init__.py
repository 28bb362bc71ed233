"""Certificates obtained and renewed over ACME, and the worker's view of its TLS."""
