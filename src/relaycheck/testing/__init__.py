"""aiosmtpd servers with relay behaviours, shared by tests, the demo and the honeypot."""
