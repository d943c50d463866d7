"""The versioned JSON documents (see docs/report-schema.md, docs/audit.md, docs/scan.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaycheck.audit.model import AuditReport
    from relaycheck.honeypot.report import Summary as HoneypotSummary
    from relaycheck.model import Report
    from relaycheck.render import Style
    from relaycheck.render.history import HistoryReport
    from relaycheck.scan.summary import ScanSummary


def check(report: Report, style: Style) -> str:
    from relaycheck.render.json import render_json

    return render_json(report)


def audit(report: AuditReport, style: Style) -> str:
    from relaycheck import __version__
    from relaycheck.audit.render import render_json

    return render_json(report, __version__)


def scan(summary: ScanSummary, style: Style) -> str:
    return json.dumps(summary.as_dict(), indent=2, ensure_ascii=False) + "\n"


def honeypot(summary: HoneypotSummary, style: Style) -> str:
    from relaycheck.honeypot.report import render_json

    return render_json(summary)


def history(report: HistoryReport, style: Style) -> str:
    from relaycheck.render.history import render_history_json

    return render_history_json(report.target, report.entries, report.alerts, report.total)
