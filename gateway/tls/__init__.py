"""TLS: the SNI certificate store, ACME issuance, its storage and renewal."""
