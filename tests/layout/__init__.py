"""Tests of the package's shape."""
