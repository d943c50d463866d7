"""Plain text for a terminal (rich, coloured when ``style.color``)."""

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
    from relaycheck.render.text import render_text

    return render_text(report, verbose=style.verbose, color=style.color, width=style.width)


def audit(report: AuditReport, style: Style) -> str:
    from relaycheck.audit.render import render_text

    return render_text(report, verbose=style.verbose, color=style.color, width=style.width)


def scan(summary: ScanSummary, style: Style) -> str:
    from relaycheck.scan.summary import render_text

    return render_text(summary.as_dict())


def honeypot(summary: HoneypotSummary, style: Style) -> str:
    from relaycheck.honeypot.report import render_text

    return render_text(summary)


def history(report: HistoryReport, style: Style) -> str:
    from relaycheck.render.history import render_history_text

    return render_history_text(report.target, report.entries, report.alerts, report.total)
