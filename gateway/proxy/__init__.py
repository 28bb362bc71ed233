"""Reverse proxy: upstream pools, balancing, header and path rules for what goes upstream."""
