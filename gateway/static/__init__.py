"""Static files: safe path mapping, an in-memory cache of hot files, HTTP semantics."""
