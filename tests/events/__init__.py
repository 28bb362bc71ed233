"""Tests of gateway.events."""
