"""Process management: the command line, the supervisor and the worker with its shutdown order."""
