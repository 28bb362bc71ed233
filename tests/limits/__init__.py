"""Tests of gateway.limits."""
