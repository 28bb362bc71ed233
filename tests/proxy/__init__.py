"""Tests of gateway.proxy."""
