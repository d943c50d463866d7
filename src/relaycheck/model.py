"""The report model: frozen dataclasses shared by every layer (a leaf: imports nothing of ours).

Vocabulary: a *target* is one SMTP endpoint; a *probe* one relay attempt or control;
an *observation* what one probe produced; a *verdict* the conclusion for a target; a *finding*
anything else worth telling the admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from relaycheck.errors import ErrorKind

SCHEMA_VERSION = 1


class Transport(StrEnum):
    PLAIN = "plain"
    STARTTLS = "starttls"
    TLS = "tls"  # implicit TLS (port 465)


class ProbeKind(StrEnum):
    RELAY = "relay"
    CONTROL = "control"


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED_POLICY = "rejected-policy"
    REJECTED_OTHER = "rejected-other"
    DEFERRED = "deferred"
    ERROR = "error"
    SKIPPED = "skipped"


class Stage(StrEnum):
    """Where a probe's outcome was decided."""

    CONNECT = "connect"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


class VerdictKind(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    INCONCLUSIVE = "inconclusive"


class Confidence(StrEnum):
    CONFIRMED = "confirmed"  # a test message arrived (delivery mode)
    ACCEPTED_AT_DATA = "accepted-at-data"  # the server answered 354 to DATA
    ACCEPTED_AT_RCPT = "accepted-at-rcpt"  # the server answered 250/251 to RCPT
    ACCEPTED_NOT_DELIVERED = "accepted-not-delivered"  # inconclusive: took the test message, which never arrived
    AUTH_BYPASS = "auth-bypass"  # open: a made-up AUTH login was accepted and an outside recipient followed
    POLICY_REFUSAL = "policy-refusal"  # closed: every relay path refused for policy
    UNDETERMINED = "undetermined"  # inconclusive


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        """0 for critical, 4 for info: the one order of findings in every report."""
        return _SEVERITY_RANK[self]


@dataclass(frozen=True)
class Target:
    """One SMTP endpoint. ``address`` is the IP actually connected to when known."""

    host: str
    port: int = 25
    transport: Transport = Transport.PLAIN
    address: str | None = None
    domain: str | None = None  # the mail domain this target serves, when found through MX
    mx_preference: int | None = None

    @property
    def label(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host  # [::1]:25, not ::1:25
        if self.address and self.address != self.host:
            shown = f"{self.host} ({self.address})"
        suffix = "" if self.transport is Transport.PLAIN else f"/{self.transport}"
        return f"{shown}:{self.port}{suffix}"


@dataclass(frozen=True)
class Reply:
    """One complete SMTP reply (possibly multi-line)."""

    code: int
    lines: tuple[str, ...]  # the text of each line, without the code and separator
    enhanced: str | None = None  # RFC 3463 enhanced status code of the first line, e.g. "5.7.1"

    @cached_property
    def text(self) -> str:
        return " ".join(line for line in self.lines if line)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


# Not frozen, on purpose: built ~100 times per target on a scan's hot path, and a frozen
# dataclass costs 5x as much to construct. Treat it as immutable all the same.
@dataclass(slots=True)
class Exchange:
    """One step of a transcript: a command sent and the reply to it (or the greeting)."""

    sent: str | None  # the command line as put on the wire (without CRLF); None for the greeting
    reply: Reply | None  # None when the peer said nothing (drop, timeout, aborted on purpose)
    at: float  # seconds since the connection started
    note: str | None = None  # e.g. "TLS established", "connection dropped"


@dataclass(frozen=True)
class ConnectionLog:
    index: int
    transport: Transport
    tls: bool
    exchanges: tuple[Exchange, ...]
    error: str | None = None


class DeliveryState(StrEnum):
    CONFIRMED = "confirmed"  # the test message arrived in the operator's mailbox
    NOT_DELIVERED = "not-delivered"  # the server took it, it never arrived (discard, bounce, queue)
    NOT_ACCEPTED = "not-accepted"  # refused at DATA or at the end of the content: nothing sent
    UNKNOWN = "unknown"  # sent, but the mailbox could not be read to see whether it arrived


@dataclass(frozen=True)
class Delivery:
    """What happened to the one test message sent for an accepted relay probe."""

    state: DeliveryState
    token: str
    final_reply: Reply | None = None  # the reply to the end of the content ("250 queued as …")
    received: tuple[str, ...] = ()  # Received: headers of the arrived message: the path it took
    arrived_via: str | None = None  # "sink" or "imap"


# Not frozen, on purpose: built ~100 times per target on a scan's hot path, and a frozen
# dataclass costs 5x as much to construct. Treat it as immutable all the same.
@dataclass(slots=True)
class Observation:
    """What one probe produced."""

    probe_id: str
    kind: ProbeKind
    title: str
    mail_from: str  # the path exactly as sent after ``MAIL FROM:``
    rcpt_to: str  # the path exactly as sent after ``RCPT TO:``
    outcome: Outcome
    stage: Stage
    reply: Reply | None  # the reply that decided the outcome
    reason: str  # why the outcome was chosen, in words
    outside_domain: str | None = None  # the outside domain this relay probe tried to reach
    local_part_trick: bool = False  # an address some MTAs take as a local mailbox
    domain_check: bool = False  # the plain probe run once per outside domain (relay-domain test)
    tls: bool = False
    connection: int = 0
    attempts: int = 1
    data_reply: Reply | None = None  # with --data-probe or --confirm: the reply to DATA
    delivery: Delivery | None = None  # delivery mode only
    role: str | None = None  # controls: "postmaster", "catch-all", "literal-local"
    # The probe's own sender, refused at MAIL: ``mail_from`` is then the stand-in sender (null or
    # local) the probe was run again with, or still the refused one when every sender was refused.
    refused_sender: Reply | None = None


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    confidence: Confidence
    explanation: str  # one paragraph for a human
    evidence: tuple[str, ...] = ()  # probe ids that support the verdict
    advice: str | None = None  # what to do next (fix, retry, confirm)


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}  # declared most severe first


@dataclass(frozen=True)
class Finding:
    code: str  # stable, e.g. "relay-domain", "catch-all", "tls-required"
    severity: Severity
    title: str
    detail: str
    evidence: tuple[str, ...] = ()  # probe ids, reply texts or config lines that show it
    location: str | None = None  # "file:line" for findings from configuration files
    remediation: str | None = None  # the fix, for the detected MTA when known


@dataclass(frozen=True)
class SessionFacts:
    """What the preflight learnt about the server."""

    banner: Reply | None = None
    banner_host: str | None = None
    ehlo_host: str | None = None
    extensions: tuple[str, ...] = ()  # EHLO keywords, upper case, with parameters
    esmtp: bool = True  # False when we had to fall back to HELO
    pipelining: bool = False
    starttls_offered: bool = False
    tls_required: bool = False  # relay probes were refused with "530 ... STARTTLS first"
    local_domain: str | None = None
    ip_literal: str | None = None


@dataclass(frozen=True)
class Fingerprint:
    """The MTA family behind a target, as far as its replies tell."""

    family: str  # postfix, exim, exchange, sendmail, opensmtpd, qmail, haraka, unknown
    version: str | None = None
    evidence: tuple[str, ...] = ()  # the banner/EHLO/reply texts that gave it away


@dataclass(frozen=True)
class TlsFacts:
    """What a TLS handshake with the target showed (STARTTLS or implicit TLS)."""

    offered: bool  # STARTTLS advertised, or an implicit-TLS port
    established: bool = False
    version: str | None = None  # "TLSv1.3"
    cipher: str | None = None
    cert_subject: str | None = None  # subject common name
    cert_sans: tuple[str, ...] = ()  # DNS names in subjectAltName
    cert_issuer: str | None = None
    not_before: str | None = None  # ISO 8601 UTC
    not_after: str | None = None
    self_signed: bool | None = None
    chain_verified: bool | None = None  # against this machine's trust store
    verify_error: str | None = None
    hostname_matches: bool | None = None  # the target's host name against SAN/CN (None: no name)
    error: str | None = None  # the handshake failed: why
    cert_sha256: str | None = None  # SHA-256 of the certificate (DER), hex: tells a replaced certificate


@dataclass(frozen=True)
class DnsblResult:
    zone: str
    listed: bool | None  # None: unknown (query refused, open-resolver block, timeout)
    codes: tuple[str, ...] = ()  # the A answers, e.g. ("127.0.0.2",)
    meaning: str = ""  # what the codes mean for this zone
    txt: str | None = None  # the zone's TXT explanation when it gives one


@dataclass(frozen=True)
class HygieneFacts:
    """Everything the hygiene checks collected about one target (pure data for findings/hygiene.py).

    ``None`` means "not checked" (turned off, or not applicable), as opposed to an empty answer.
    """

    ptr_names: tuple[str, ...] | None = None
    fcrdns: bool | None = None  # one of the PTR names resolves back to the address
    tls: TlsFacts | None = None
    auth_before_tls: tuple[str, ...] = ()  # AUTH mechanisms offered on the clear-text session
    auth_after_tls: tuple[str, ...] = ()
    vrfy_postmaster: Reply | None = None
    vrfy_random: Reply | None = None  # VRFY of a user that cannot exist
    expn_postmaster: Reply | None = None
    auth_bypass_reply: Reply | None = None  # the one bogus AUTH (only with --auth-bypass-check)
    auth_bypass_relay: Reply | None = None  # RCPT to an outside recipient right after it
    dnsbl: tuple[DnsblResult, ...] | None = None
    fingerprint: Fingerprint | None = None
    dns_note: str | None = None  # why PTR/DNSBL facts are missing: the lookups failed or were skipped


@dataclass(frozen=True)
class TargetReport:
    target: Target
    verdict: Verdict
    facts: SessionFacts = field(default_factory=SessionFacts)
    observations: tuple[Observation, ...] = ()
    findings: tuple[Finding, ...] = ()
    connections: tuple[ConnectionLog, ...] = ()
    round_trips: int = 0
    duration: float = 0.0
    error: str | None = None  # the target could not be tested at all (refused, timeout…)
    hygiene: HygieneFacts | None = None
    error_kind: ErrorKind | None = None  # what kind of failure ``error`` is, set where it was raised


@dataclass(frozen=True)
class InputProblem:
    """A user input that produced no target (unresolvable name, null MX…)."""

    given: str
    problem: str


@dataclass(frozen=True)
class Report:
    targets: tuple[TargetReport, ...]
    problems: tuple[InputProblem, ...] = ()
    started: str = ""  # ISO 8601 UTC
    duration: float = 0.0
    tool_version: str = ""
    mode: str = "probe"  # "probe" or "data-probe"
    schema_version: int = SCHEMA_VERSION
