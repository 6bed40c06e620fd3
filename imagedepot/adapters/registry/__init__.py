"""Registry adapters: the async OCI Distribution client that fetches what caches are built from."""
