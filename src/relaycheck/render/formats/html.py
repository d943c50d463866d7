"""One self-contained HTML page (inline CSS, no script, nothing fetched)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaycheck.audit.model import AuditReport
    from relaycheck.honeypot.report import Summary as HoneypotSummary
    from relaycheck.model import Report
    from relaycheck.render import Style
    from relaycheck.render.history import HistoryReport
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


def honeypot(summary: HoneypotSummary, style: Style) -> str:
    from relaycheck.honeypot.report import render_html

    return render_html(summary)


def history(report: HistoryReport, style: Style) -> str:
    from relaycheck.render.history import render_history_html

    return render_history_html(report.target, report.entries, report.alerts, report.total)
