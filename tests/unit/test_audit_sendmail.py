"""Sendmail auditor: Debian's sendmail.mc, the access map source, relay-domains."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaycheck.audit import AuditReport, Conclusion, Family, SourceFile, audit_sources

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audit"
OPEN, CLOSED = Conclusion.OPEN_RELAY_POSSIBLE, Conclusion.NO_OPEN_RELAY_PATH


def audit(*names: str) -> AuditReport:
    return audit_sources([SourceFile(n, (FIXTURES / n).read_text()) for n in names], Family.SENDMAIL)


def codes(report: AuditReport) -> set[str]:
    return {f.code for f in report.findings}


CASES = [
    (["sendmail/sendmail.mc"], CLOSED, set()),
    (["sendmail/access"], CLOSED, set()),
    (["sendmail/sendmail.mc", "sendmail/access"], CLOSED, set()),
    (["sendmail/sendmail-promiscuous.mc"], OPEN, {"sendmail-promiscuous-relay"}),
    (["sendmail/sendmail-loose.mc"], OPEN, {"sendmail-relay-local-from", "sendmail-relay-entire-domain"}),
    (
        ["sendmail/sendmail-mailfrom.mc"],
        OPEN,
        {"sendmail-relay-mail-from", "sendmail-loose-relay-check", "sendmail-relay-based-on-mx"},
    ),
    (["sendmail/access-wide"], OPEN, {"sendmail-access-relay-wide", "sendmail-access-relay-range"}),
    (["sendmail/access-from"], OPEN, {"sendmail-access-from-relay"}),
    (["sendmail/sendmail.mc", "sendmail/access-from"], CLOSED, {"sendmail-access-from-relay-inert"}),
    (
        ["sendmail/sendmail-mailfrom.mc", "sendmail/access-from"],
        OPEN,
        {
            "sendmail-relay-mail-from",
            "sendmail-loose-relay-check",
            "sendmail-relay-based-on-mx",
            "sendmail-access-from-relay",
        },
    ),
    (["sendmail/access-to-tld"], OPEN, {"sendmail-access-relay-to-tld"}),
    (["sendmail/relay-domains"], OPEN, {"sendmail-access-relay-to-tld"}),
]


@pytest.mark.parametrize(("files", "conclusion", "expected"), CASES, ids=[" + ".join(c[0]) for c in CASES])
def test_fixture(files: list[str], conclusion: Conclusion, expected: set[str]) -> None:
    report = audit(*files)
    assert report.conclusion is conclusion, report.explanation
    assert codes(report) == expected


def test_promiscuous_relay_location_and_fix() -> None:
    (found,) = audit("sendmail/sendmail-promiscuous.mc").findings
    assert found.location == "sendmail/sendmail-promiscuous.mc:51"
    assert "make -C /etc/mail" in (found.remediation or "")


def test_dnl_commented_feature_is_ignored() -> None:
    text = "dnl FEATURE(`promiscuous_relay')dnl\nFEATURE(`access_db')dnl\n"
    assert audit_sources([SourceFile("sendmail.mc", text)], Family.SENDMAIL).findings == ()


def test_access_prefix_widths() -> None:
    text = "Connect:10 RELAY\nConnect:62.96 RELAY\n192.168.1 RELAY\nConnect:IPv6:2001:db8 RELAY\n"
    report = audit_sources([SourceFile("access", text)], Family.SENDMAIL)
    assert [(f.code, f.location) for f in report.findings] == [
        ("sendmail-access-relay-wide", "access:2"),
        ("sendmail-access-relay-wide", "access:4"),
    ]


def test_unknown_tag_is_unparsed() -> None:
    report = audit_sources([SourceFile("access", "Bogus:1.2.3.4 RELAY\nConnect:127.0.0.1 RELAY\n")], Family.SENDMAIL)
    assert [f.code for f in report.findings] == ["unparsed-line"]
    assert report.conclusion is CLOSED


def test_generated_sendmail_cf_is_one_unparsed_finding() -> None:
    cf = "######## built by root on Mon\nO QueueDirectory=/var/spool/mqueue\nFR-o /etc/mail/relay-domains\n"
    report = audit_sources([SourceFile("sendmail.cf", cf)], Family.SENDMAIL)
    assert report.conclusion is Conclusion.COULD_NOT_PARSE
    assert len(report.findings) == 1
    assert "sendmail.mc" in report.findings[0].detail
