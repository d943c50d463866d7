"""Tooling for tests and benchmarks only (not shipped in the package): a light SMTP server for
large loopback populations, the population itself, and a live uvicorn server for browser tests."""
