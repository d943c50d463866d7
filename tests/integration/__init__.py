"""Integration tests: real MTAs in network namespaces (see the lab package)."""
