"""Concrete implementations of the ports: databases, blob storage, registry clients, crypto.

Only `imagedepot.bootstrap` imports from here; services see the Protocols in `imagedepot.ports`.
"""
