"""PURE: the one registry of finding codes (``codes.toml``): severity, title, meaning, who emits
it, and, joined from ``fixes.toml``, the fix per MTA family.

The live check's hygiene rules, the relay verdict and the configuration auditor build their
findings through ``finding`` (or read ``spec``), so a code's severity and title are written once;
docs/findings.md is generated from here (``relaycheck.findings.docs``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

from relaycheck.findings import fixes
from relaycheck.model import Finding, Severity


class Source(StrEnum):
    HYGIENE = "hygiene"  # the live check's hygiene rules
    VERDICT = "verdict"  # the relay verdict
    AUDIT = "audit"  # the configuration auditor


@dataclass(frozen=True)
class FindingCode:
    code: str
    source: Source
    severity: Severity
    title: str  # the default title; a rule may make it more specific
    meaning: str  # plain words (for audit codes: what the configuration allows)
    advice: str | None = None  # what to do, in one line (docs)
    family: str | None = None  # audit codes: the mail server ("any": every one)
    opens_relay: bool = False  # audit codes: a relay path for outside clients
    fix: str | None = None  # the fix when fixes.toml has no text of its own for the code

    def remediation(self, family: str | None) -> str | None:
        """The fix for an MTA of ``family`` (``None``: the generic text)."""
        return fixes.fix_for(self.code, family or "unknown") or self.fix


_KEYS = {"source", "severity", "title", "meaning", "advice", "family", "opens_relay", "fix"}


@cache
def codes() -> dict[str, FindingCode]:
    """Every code, in the file's order; raises ``ValueError`` on a malformed file or a fix text
    for a code the registry does not know."""
    raw = resources.files("relaycheck.findings").joinpath("codes.toml").read_text(encoding="utf-8")
    registry: dict[str, FindingCode] = {}
    for code, table in tomllib.loads(raw).items():
        unknown = set(table) - _KEYS
        if unknown:
            raise ValueError(f"findings/codes.toml: [{code}] has unknown keys {sorted(unknown)}")
        registry[code] = FindingCode(
            code=code,
            source=Source(table["source"]),
            severity=Severity(table["severity"]),
            title=table["title"],
            meaning=table["meaning"],
            advice=table.get("advice"),
            family=table.get("family"),
            opens_relay=bool(table.get("opens_relay", False)),
            fix=table["fix"].strip("\n").rstrip() if "fix" in table else None,
        )
    orphans = fixes.codes_with_texts() - set(registry)
    if orphans:
        raise ValueError(f"findings/fixes.toml: fix texts for codes nothing emits: {sorted(orphans)}")
    return registry


def spec(code: str) -> FindingCode:
    return codes()[code]


def fix_for(code: str, family: str) -> str | None:
    """The fix for finding ``code`` on an MTA of ``family`` (any other family: the generic text)."""
    entry = codes().get(code)
    return entry.remediation(family) if entry is not None else fixes.fix_for(code, family)


def of_source(source: Source) -> list[FindingCode]:
    return [c for c in codes().values() if c.source is source]


def finding(
    code: str,
    detail: str,
    evidence: Iterable[str] = (),
    *,
    family: str | None = None,
    title: str | None = None,
    severity: Severity | None = None,
    location: str | None = None,
) -> Finding:
    """A finding of a registered ``code``; its fix is the one for ``family`` (``None``: the
    generic text)."""
    entry = spec(code)
    return Finding(
        code=code,
        severity=severity or entry.severity,
        title=title or entry.title,
        detail=detail,
        evidence=tuple(evidence),
        location=location,
        remediation=entry.remediation(family),
    )
