"""Use cases: what a user or the worker can do, written against the ports only."""
