"""Redirect links: safe targets, signed ad-hoc links, and the shared short-link store."""
