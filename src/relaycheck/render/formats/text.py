"""Plain text for a terminal (rich, coloured when ``style.color``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaycheck.audit.model import AuditReport
    from relaycheck.model import Report
    from relaycheck.render import Style
    from relaycheck.scan.summary import ScanSummary


def check(report: Report, style: Style) -> str:
    from relaycheck.render.text import render_text

    return render_text(report, verbose=style.verbose, color=style.color)


def audit(report: AuditReport, style: Style) -> str:
    from relaycheck.audit.render import render_text

    return render_text(report, verbose=style.verbose, color=style.color)


def scan(summary: ScanSummary, style: Style) -> str:
    from relaycheck.scan.summary import render_text

    return render_text(summary.as_dict())
