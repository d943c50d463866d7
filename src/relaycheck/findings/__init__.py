"""PURE: findings, defined once. ``registry`` holds every code (severity, title, meaning),
``fixes`` the fix texts per MTA family, ``hygiene`` the live check's hygiene rules; the relay
verdict and the configuration auditor build their findings through ``registry.finding``."""

from relaycheck.findings.fixes import Block, blocks
from relaycheck.findings.hygiene import hygiene_findings, with_remediation
from relaycheck.findings.registry import FindingCode, Source, codes, finding, fix_for, spec

__all__ = [
    "Block",
    "FindingCode",
    "Source",
    "blocks",
    "codes",
    "finding",
    "fix_for",
    "hygiene_findings",
    "spec",
    "with_remediation",
]
