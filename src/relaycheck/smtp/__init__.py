"""relaycheck's own SMTP client: a sans-I/O codec (``wire``) under a small asyncio session."""
