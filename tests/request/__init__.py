"""Tests of gateway.request."""
