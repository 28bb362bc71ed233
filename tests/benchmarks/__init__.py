"""Tests of the benchmark harness (its smoke run against real peers)."""
