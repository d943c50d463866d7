"""Web UI and REST API tests (relaycheck serve)."""
