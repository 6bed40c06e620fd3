"""Blob store backends: where verified, content-addressed bytes live."""
