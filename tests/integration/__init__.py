"""Integration tests: real MTAs in network namespaces (see lab.py)."""
