"""One renderer interface: every format module shows every kind of report, through one escaper."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from relaycheck.audit import Family, SourceFile, audit_sources
from relaycheck.errors import UsageError
from relaycheck.honeypot.report import summarise
from relaycheck.model import (
    Confidence,
    Finding,
    InputProblem,
    Report,
    Severity,
    Target,
    TargetReport,
    Transport,
    Verdict,
    VerdictKind,
)
from relaycheck.render import ReportKind, Style, chosen_format, format_names, render
from relaycheck.render.history import HistoryReport
from relaycheck.scan.summary import ScanSummary

HOSTILE = "evil<script>|`x`*_[y]"


def reports() -> dict[ReportKind, object]:
    target = Target("mx.example.com", 25, Transport.PLAIN, address="192.0.2.7")
    verdict = Verdict(VerdictKind.CLOSED, Confidence.POLICY_REFUSAL, "Refused.", ())
    finding = Finding("no-ptr", Severity.MEDIUM, HOSTILE, HOSTILE)
    check = Report((TargetReport(target, verdict, findings=(finding,)),), (InputProblem(HOSTILE, "no such host"),))
    config = "mynetworks = 0.0.0.0/0\nsmtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
    audit = audit_sources([SourceFile(HOSTILE, config)], Family.POSTFIX)
    scan = ScanSummary(HOSTILE, records=1)
    scan.by_verdict["closed"] += 1
    honeypot = summarise([], datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    history = HistoryReport(HOSTILE, (), (), 0)
    return {ReportKind.CHECK: check, ReportKind.AUDIT: audit, ReportKind.SCAN: scan, ReportKind.HONEYPOT: honeypot,
            ReportKind.HISTORY: history}


DOCUMENTS = ("text", "json", "markdown", "html")  # the formats every kind of report has


def test_the_formats_are_the_modules() -> None:
    assert format_names()[0] == "text"
    assert set(format_names()) == {*DOCUMENTS, "csv", "nagios"}


@pytest.mark.parametrize("kind", list(ReportKind))
def test_a_format_without_a_form_for_a_report_says_so(kind: ReportKind) -> None:
    if kind is not ReportKind.CHECK:
        with pytest.raises(UsageError, match=f"nagios has no form for a {kind} report"):
            render(kind, reports()[kind], "nagios")


@pytest.mark.parametrize("fmt", DOCUMENTS)
@pytest.mark.parametrize("kind", list(ReportKind))
def test_every_format_shows_every_report_and_escapes_it(kind: ReportKind, fmt: str) -> None:
    if (kind, fmt) == (ReportKind.HISTORY, "markdown"):
        return  # a history is read in a terminal or a browser
    text = render(kind, reports()[kind], fmt, Style())
    assert text.endswith("\n")
    if fmt == "json":
        json.loads(text)
    if fmt in ("markdown", "html") and kind is not ReportKind.HONEYPOT:  # an empty honeypot log has no text
        assert "<script>" not in text and "&lt;script&gt;" in text
    if fmt == "markdown" and kind is not ReportKind.HONEYPOT:
        assert "evil&lt;script&gt;\\|\\`x\\`\\*\\_\\[y\\]" in text  # one escaper for every report


def test_csv_rows_parse_and_formulas_are_defused() -> None:
    report = reports()[ReportKind.CHECK]
    assert isinstance(report, Report)
    hostile = Report(report.targets, (InputProblem("=cmd|' /C calc'!A0", "no such host"),))
    rows = list(csv.reader(io.StringIO(render(ReportKind.CHECK, hostile, "csv"))))
    assert rows[0][:3] == ["input", "host", "address"]
    assert rows[1][2:6] == ["192.0.2.7", "25", "plain", "closed"] and rows[1][8] == "no-ptr"
    assert rows[2][0] == "'=cmd|' /C calc'!A0"  # shown as text, never run as a formula
    audit = list(csv.reader(io.StringIO(render(ReportKind.AUDIT, reports()[ReportKind.AUDIT], "csv"))))
    assert audit[0] == ["severity", "code", "location", "relay_path", "title", "detail"] and len(audit) > 1


def test_json_and_format_must_agree() -> None:
    assert chosen_format(None, False) == "text" and chosen_format(None, True) == "json"
    assert chosen_format("json", True) == "json"
    with pytest.raises(UsageError, match="contradict"):
        chosen_format("markdown", True)


def test_unknown_format_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown format"):
        render(ReportKind.CHECK, reports()[ReportKind.CHECK], "pdf")
