"""The config: typed, frozen models per capability, their checks, and loading."""
