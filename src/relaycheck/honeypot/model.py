"""What the honeypot records about a session: typed dataclasses, turned into one JSON line each.

Every free-text field a client controls is capped (``cap``), and every list has a maximum
length, so that no client can make one record large: a record stays well under ``MAX_RECORD``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

RECORD_VERSION = 1
TEXT_CAP = 512  # characters of one command, subject, address…
MAX_COMMANDS = 200  # commands kept per session (the rest are counted)
MAX_TRANSACTIONS = 20  # transactions kept per session (the rest are counted)
MAX_AUTH = 20  # AUTH attempts kept per session
MAX_URLS = 50
MAX_ATTACHMENTS = 50
MAX_RECIPIENTS = 100  # recipients of one message; later RCPTs get a 452, as from a real MTA


def cap(text: str, limit: int = TEXT_CAP) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Classification(StrEnum):
    RELAY_TEST = "relay-test"  # a spammer mailing itself through us to learn that we relay
    SPAM_RUN = "spam-run"  # messages for outside recipients that are not a relay test
    SCANNER = "scanner"  # a relay tester or banner grabber: no message, or a tool's probe
    AUTH_ATTACK = "auth-attack"  # logins tried, no message
    OTHER = "other"


@dataclass
class Recipient:
    address: str  # the path as sent
    scope: str  # local / relay / invalid (catalogue.analysis.Scope)
    probe_id: str | None  # the catalogue entry the envelope matches (relay tricks)
    family: str | None
    outside_domain: str | None
    dropbox: bool = False  # a known drop-box (the recipient of an earlier relay test)


@dataclass
class Attachment:
    name: str
    content_type: str
    size: int
    sha256: str


@dataclass
class MessageFacts:
    size: int
    sha256: str
    subject: str
    message_id: str
    sender_header: str
    urls: list[str]
    attachments: list[Attachment]
    fuzzy_hash: str  # ssdeep of the normalised text: groups a campaign's variants
    headers: int
    mentions: list[str] = field(default_factory=list)  # our own address/name found in it
    relay_test: bool = False
    stored: bool = False  # the raw message is in the store (it may be pruned later)
    delivered: bool = False
    delivery: str | None = None  # what the smarthost said, when it was offered


@dataclass
class Transaction:
    mail_from: str
    recipients: list[Recipient] = field(default_factory=list)
    refused_recipients: int = 0  # beyond the per-message limit
    message: MessageFacts | None = None
    data_outcome: str | None = None  # accepted / too-big / line-too-long / no-space / aborted


@dataclass
class AuthAttempt:
    mechanism: str
    user: str
    password: str
    accepted: bool


@dataclass
class SessionRecord:
    version: int
    session: str
    sensor: str
    persona: str
    start: str
    end: str
    duration_s: float
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    listener: str  # plain / tls (implicit TLS)
    tls_version: str | None = None
    tls_cipher: str | None = None
    helo: str | None = None
    helo_verb: str | None = None  # HELO or EHLO
    auth: list[AuthAttempt] = field(default_factory=list)
    auth_dropped: int = 0
    commands: list[str] = field(default_factory=list)
    commands_dropped: int = 0
    transactions: list[Transaction] = field(default_factory=list)
    transactions_dropped: int = 0
    end_reason: str = "closed"  # quit / closed / idle-timeout / session-limit / too-many-errors
    classification: str = Classification.OTHER
    tool: str | None = None
    reasons: list[str] = field(default_factory=list)  # why this classification
    dropboxes: list[str] = field(default_factory=list)  # known drop-boxes among its recipients
    linked_sessions: list[str] = field(default_factory=list)  # the relay tests that revealed them
    tags: dict[str, str] = field(default_factory=dict)
