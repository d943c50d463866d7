"""Run the right family's auditor and conclude: the one entry point of the pure audit layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from relaycheck.audit.detect import detect_family
from relaycheck.audit.exchange import audit as audit_exchange
from relaycheck.audit.exim import audit as audit_exim
from relaycheck.audit.model import AuditReport, Conclusion, Family, FamilyResult, SourceFile
from relaycheck.audit.opensmtpd import audit as audit_opensmtpd
from relaycheck.audit.postfix import audit as audit_postfix
from relaycheck.audit.rules import opens_relay
from relaycheck.audit.sendmail import audit as audit_sendmail
from relaycheck.model import Finding, Severity

AUDITORS: dict[Family, Callable[[Sequence[SourceFile]], FamilyResult]] = {
    Family.POSTFIX: audit_postfix,
    Family.EXIM: audit_exim,
    Family.EXCHANGE: audit_exchange,
    Family.SENDMAIL: audit_sendmail,
    Family.OPENSMTPD: audit_opensmtpd,
}


def _sorted(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    """Relay paths first, then by severity; the parser's order (file, line) within a tier."""
    return tuple(
        sorted(findings, key=lambda f: (not opens_relay(f.code), f.severity.rank, f.code == "unparsed-line"))
    )


def conclude(result: FamilyResult) -> tuple[Conclusion, str]:
    relay = [f for f in result.findings if opens_relay(f.code)]
    if result.understood == 0:
        return Conclusion.COULD_NOT_PARSE, (
            "Nothing in the input could be understood as this kind of configuration, so no conclusion is "
            "possible. Check that the right file (or --postfix/--exim/... override) was given."
        )
    unparsed = sum(1 for f in result.findings if f.code == "unparsed-line")
    if unparsed > result.understood:
        return Conclusion.COULD_NOT_PARSE, (
            f"Most of the input is not this kind of configuration: {unparsed} line(s) could not be parsed, "
            f"{result.understood} could. A conclusion from the few that could would be a guess. Check that the "
            "right file (or --postfix/--exim/... override) was given."
        )
    if relay:
        first = relay[0]
        where = f" ({first.location})" if first.location else ""
        others = f" {len(relay) - 1} more finding(s) show other relay paths." if len(relay) > 1 else ""
        return Conclusion.OPEN_RELAY_POSSIBLE, (
            f"Open relay possible: {first.title}{where}. {first.detail}{others} {result.summary} "
            "A live test (relaycheck check) shows whether the running server behaves as its configuration says."
        )
    worth = [f for f in result.findings if f.code != "unparsed-line" and f.severity is not Severity.INFO]
    extra = f" {len(worth)} other finding(s) deserve a look." if worth else ""
    skipped = f" {unparsed} line(s) could not be parsed and were not judged." if unparsed else ""
    return Conclusion.NO_OPEN_RELAY_PATH, (
        f"No open relay path found: in the configuration given, no rule lets an unauthenticated outside client "
        f"relay to a foreign domain.{extra}{skipped} {result.summary} Settings not in the files given "
        "(other files, databases, the running server) were not seen."
    )


def audit_sources(sources: Sequence[SourceFile], family: Family | None = None) -> AuditReport:
    """Audit ``sources`` as ``family`` (detected from names and contents when None).

    Raises UsageError when the family cannot be told or the files are of different kinds.
    """
    detected = family is None
    chosen = family if family is not None else detect_family(sources)
    result = AUDITORS[chosen](sources)
    conclusion, explanation = conclude(result)
    return AuditReport(
        files=tuple(s.name for s in sources),
        family=chosen,
        family_detected=detected,
        findings=_sorted(result.findings),
        conclusion=conclusion,
        explanation=explanation,
    )
