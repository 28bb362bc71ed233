"""Tests of gateway.tls."""
