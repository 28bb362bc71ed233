"""Tests of gateway.process."""
