"""One self-contained HTML page (inline CSS, no script, nothing fetched)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaycheck.audit.model import AuditReport
    from relaycheck.model import Report
    from relaycheck.render import Style
    from relaycheck.scan.summary import ScanSummary


def check(report: Report, style: Style) -> str:
    from relaycheck.render.html import render_html

    return render_html(report)


def audit(report: AuditReport, style: Style) -> str:
    from relaycheck.audit.render import render_html

    return render_html(report)


def scan(summary: ScanSummary, style: Style) -> str:
    from relaycheck.scan.summary import render_html

    return render_html(summary.as_dict())
