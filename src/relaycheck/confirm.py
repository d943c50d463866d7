"""PURE: the delivery-mode test message: small, clearly labelled, one per probe.

The message says what it is, who sent it (the EHLO name the operator chose), against which
server, through which envelope, and carries a unique token that the sink or the IMAP poller
matches. Lines are dot-stuffed (RFC 5321 §4.5.2) by ``dot_stuff``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from relaycheck.sink import TOKEN_HEADER

SUBJECT_PREFIX = "[relaycheck] open relay test"


def new_token() -> str:
    return "rc-" + secrets.token_hex(12)


def test_message(
    *,
    token: str,
    probe_id: str,
    mail_from: str,
    rcpt_to: str,
    confirm_address: str,
    target_label: str,
    operator: str,
    now: datetime | None = None,
) -> list[str]:
    """The message as lines (without CRLF, not yet dot-stuffed)."""
    when = format_datetime(now or datetime.now(UTC))
    return [
        f"From: relaycheck open relay test <{confirm_address}>",
        f"To: <{confirm_address}>",
        f"Subject: {SUBJECT_PREFIX} {token} via {target_label}",
        f"Date: {when}",
        f"Message-ID: <{token}@relaycheck.invalid>",
        f"{TOKEN_HEADER}: {token}",
        f"X-Relaycheck-Probe: {probe_id}",
        f"X-Relaycheck-Envelope: MAIL FROM:{mail_from} RCPT TO:{rcpt_to}",
        f"X-Relaycheck-Target: {target_label}",
        "Auto-Submitted: auto-generated",
        "Precedence: bulk",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This is an automated open relay test sent by relaycheck.",
        "",
        f"Operator (EHLO name): {operator}",
        f"Server tested:        {target_label}",
        f"Probe:                {probe_id}",
        f"Envelope:             MAIL FROM:{mail_from}",
        f"                      RCPT TO:{rcpt_to}",
        f"Token:                {token}",
        "",
        "The server accepted this envelope from an outside client. If you are reading this,",
        "the message was relayed to the operator's own test mailbox: the server is an open",
        "relay for this kind of address. No other recipient was used.",
    ]


def dot_stuff(lines: Sequence[str]) -> bytes:
    """DATA content: CRLF line ends, leading dots doubled, terminated by ``.``."""
    body = "".join(("." + line if line.startswith(".") else line) + "\r\n" for line in lines)
    return body.encode("ascii", errors="replace") + b".\r\n"
