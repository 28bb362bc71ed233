"""Tests with a real headless Chromium: analytics.js (analytics-next) against the gateway."""
