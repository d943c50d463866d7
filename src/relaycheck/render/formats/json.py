"""The versioned JSON documents (see docs/report-schema.md, docs/audit.md, docs/scan.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaycheck.audit.model import AuditReport
    from relaycheck.model import Report
    from relaycheck.render import Style
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
