"""Per-route middleware around the handlers: plain objects built once per runtime."""
