"""Tests of gateway.static."""
