"""The lab's network: addresses, names and ports (all in 198.18.0.0/24, nothing routable)."""

from __future__ import annotations

NAMESPACE_PREFIX = "rclab"
NET = "198.18.0"
PREFIX_LEN = 24
CLIENT_IP = f"{NET}.2"
DNS_IP = f"{NET}.3"
SINK_IP = f"{NET}.4"
DOVECOT_IP = f"{NET}.5"
FIRST_SERVER_HOST = 10
LAB_ZONE = "lab.test"
CLIENT_HOSTNAME = f"client.{LAB_ZONE}"
SINK_HOSTNAME = f"sink.{LAB_ZONE}"
DOVECOT_HOSTNAME = f"dovecot.{LAB_ZONE}"
# Delivery-confirmation domains: MX = the client (relaycheck's --sink), and Dovecot's mailbox.
CONFIRM_DOMAIN = f"confirm.{LAB_ZONE}"
IMAP_DOMAIN = f"imap.{LAB_ZONE}"
# Dovecot mailboxes, one per test that must count exactly what reached it.
IMAP_USERS = ("rcuser", "rcuser2", "rcuser3", "rcuser4")
IMAP_PORT = 143
IMAPS_PORT = 993
LMTP_PORT = 24
# Relay probes go to these; no lab server handles them, their MX is the sink so they resolve.
OUTSIDE_DOMAINS = ("outside-a.test", "outside-b.test")
POSTGREY_PORT = 10023
GREYLIST_DELAY_S = 2
SMTP_PORT = 25
