"""One renderer interface: every format module shows every kind of report, through one escaper."""

from __future__ import annotations

import json

import pytest

from relaycheck.audit import Family, SourceFile, audit_sources
from relaycheck.errors import UsageError
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
from relaycheck.scan.summary import ScanSummary

HOSTILE = "evil<script>|`x`*_[y]"


def reports() -> dict[ReportKind, object]:
    target = Target("mx.example.com", 25, Transport.PLAIN, address="192.0.2.7")
    verdict = Verdict(VerdictKind.CLOSED, Confidence.POLICY_REFUSAL, "Refused.", ())
    finding = Finding("no-ptr", Severity.MEDIUM, HOSTILE, HOSTILE)
    check = Report((TargetReport(target, verdict, findings=(finding,)),), (InputProblem(HOSTILE, "no such host"),))
    audit = audit_sources([SourceFile(HOSTILE, "mynetworks = 0.0.0.0/0\n")], Family.POSTFIX)
    scan = ScanSummary(HOSTILE, records=1)
    scan.by_verdict["closed"] += 1
    return {ReportKind.CHECK: check, ReportKind.AUDIT: audit, ReportKind.SCAN: scan}


def test_the_formats_are_the_modules() -> None:
    assert format_names()[0] == "text"
    assert set(format_names()) == {"text", "json", "markdown", "html", "nagios"}


def test_a_format_without_a_form_for_a_report_refuses_it_in_one_line() -> None:
    with pytest.raises(UsageError, match="--format nagios has no form for a audit report"):
        render(ReportKind.AUDIT, reports()[ReportKind.AUDIT], "nagios", Style())


@pytest.mark.parametrize("fmt", format_names())
@pytest.mark.parametrize("kind", list(ReportKind))
def test_every_format_shows_every_report_and_escapes_it(kind: ReportKind, fmt: str) -> None:
    if fmt == "nagios" and kind is not ReportKind.CHECK:
        return  # a monitoring status is about servers checked live (refusal tested above)
    text = render(kind, reports()[kind], fmt, Style())
    assert text.endswith("\n")
    if fmt == "json":
        json.loads(text)
    if fmt in ("markdown", "html"):
        assert "<script>" not in text and "&lt;script&gt;" in text
    if fmt == "markdown":
        assert "evil&lt;script&gt;\\|\\`x\\`\\*\\_\\[y\\]" in text  # one escaper for every report


def test_json_and_format_must_agree() -> None:
    assert chosen_format(None, False) == "text" and chosen_format(None, True) == "json"
    assert chosen_format("json", True) == "json"
    with pytest.raises(UsageError, match="contradict"):
        chosen_format("markdown", True)


def test_unknown_format_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown format"):
        render(ReportKind.CHECK, reports()[ReportKind.CHECK], "pdf")
