"""Offline configuration auditor (``relaycheck audit``): configuration files -> findings.

PURE layer: the parsers and rules take file *texts* and return findings; reading
files, stdin and directories happens in ``command.py`` only. One module per mail server family
(postfix, exim, exchange, sendmail, opensmtpd); ``rules.py`` holds every rule's code, severity,
plain-words meaning and fix as data.
"""

from __future__ import annotations

from relaycheck.audit.engine import audit_sources
from relaycheck.audit.model import AuditReport, Conclusion, Family, SourceFile

__all__ = ["AuditReport", "Conclusion", "Family", "SourceFile", "audit_sources"]
