"""Output formats: one module per format (see ``relaycheck.render``)."""
