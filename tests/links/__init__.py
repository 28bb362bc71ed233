"""Tests of gateway.links."""
