"""relaycheck honeypot: a fake open relay that records spammers and relays nothing."""
