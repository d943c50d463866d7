"""The audit's own report model: which files, which family, which findings, what it concludes.

Findings are ``relaycheck.model.Finding`` (the same type live checks report), so renderers and
users' scripts see one shape for "something worth telling the admin".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from relaycheck.model import Finding

AUDIT_SCHEMA_VERSION = 1


class Family(StrEnum):
    POSTFIX = "postfix"
    EXIM = "exim"
    EXCHANGE = "exchange"
    SENDMAIL = "sendmail"
    OPENSMTPD = "opensmtpd"


class Conclusion(StrEnum):
    OPEN_RELAY_POSSIBLE = "open-relay-possible"  # a finding shows a path for outside clients
    NO_OPEN_RELAY_PATH = "no-open-relay-path"  # the configuration was understood, no such path
    COULD_NOT_PARSE = "could-not-parse"  # nothing in the input could be understood


@dataclass(frozen=True)
class SourceFile:
    """One configuration text and the name to show for it (a path, or ``<stdin>``)."""

    name: str
    text: str


@dataclass(frozen=True)
class Line:
    """One physical line of a source file (1-based ``number``)."""

    source: str
    number: int
    text: str

    @property
    def location(self) -> str:
        return f"{self.source}:{self.number}"


@dataclass(frozen=True)
class FamilyResult:
    """What one family's auditor found.

    ``understood`` counts the statements the parser recognised (0 means "could not parse").
    ``summary`` says in one sentence what was evaluated, for the report's explanation.
    """

    findings: tuple[Finding, ...]
    understood: int
    summary: str


@dataclass(frozen=True)
class AuditReport:
    files: tuple[str, ...]
    family: Family
    family_detected: bool  # False when the user forced it with --postfix/--exim/...
    findings: tuple[Finding, ...]
    conclusion: Conclusion
    explanation: str  # one paragraph for a human
    schema_version: int = AUDIT_SCHEMA_VERSION
