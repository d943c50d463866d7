"""Markdown to paste into a ticket or a wiki (untrusted text escaped by ``render.escape``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaycheck.audit.model import AuditReport
    from relaycheck.honeypot.report import Summary as HoneypotSummary
    from relaycheck.model import Report
    from relaycheck.render import Style
    from relaycheck.scan.summary import ScanSummary


def check(report: Report, style: Style) -> str:
    from relaycheck.render.markdown import render_markdown

    return render_markdown(report)


def audit(report: AuditReport, style: Style) -> str:
    from relaycheck.audit.render import render_markdown

    return render_markdown(report)


def scan(summary: ScanSummary, style: Style) -> str:
    from relaycheck.scan.summary import render_markdown

    return render_markdown(summary.as_dict())


def honeypot(summary: HoneypotSummary, style: Style) -> str:
    from relaycheck.honeypot.report import render_markdown

    return render_markdown(summary)
