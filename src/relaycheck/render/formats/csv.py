"""CSV for spreadsheets and scripts: one row per target (check), per finding (audit), per open
relay (scan summary). Cells that a spreadsheet would run as a formula (a hostile banner starting
with ``=``) are prefixed with ``'``."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from relaycheck.render.escape import visible

if TYPE_CHECKING:
    from relaycheck.audit.model import AuditReport
    from relaycheck.model import Report
    from relaycheck.render import Style
    from relaycheck.scan.summary import ScanSummary

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else visible(str(value))
    return "'" + text if text.startswith(_FORMULA_START) else text


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


def check(report: Report, style: Style) -> str:
    header = ["input", "host", "address", "port", "transport", "verdict", "confidence", "evidence", "findings",
              "error_kind", "error"]
    rows: list[list[Any]] = [
        [t.target.domain or t.target.host, t.target.host, t.target.address, t.target.port, t.target.transport,
         t.verdict.kind, t.verdict.confidence, " ".join(t.verdict.evidence), " ".join(f.code for f in t.findings),
         t.error_kind, t.error]
        for t in report.targets
    ]
    rows += [[p.given, "", "", "", "", "", "", "", "", "input", p.problem] for p in report.problems]
    return _table(header, rows)


def audit(report: AuditReport, style: Style) -> str:
    from relaycheck.audit.rules import opens_relay

    header = ["severity", "code", "location", "relay_path", "title", "detail"]
    return _table(header, ([f.severity, f.code, f.location, "yes" if opens_relay(f.code) else "", f.title, f.detail]
                           for f in report.findings))


def scan(summary: ScanSummary, style: Style) -> str:
    header = ["ip", "port", "name", "confidence", "banner", "evidence"]
    rows = []
    for entry in summary.open_relays:
        evidence = entry.get("evidence") or []
        first = f"RCPT TO:{evidence[0].get('rcpt_to')} -> {evidence[0].get('reply')}" if evidence else ""
        rows.append([entry["ip"], entry["port"], entry.get("domain") or entry.get("host"), entry.get("confidence"),
                     entry.get("banner"), first])
    return _table(header, rows)
