"""OpenSMTPD auditor: smtpd.conf in the 6.4+ grammar and the older accept/reject rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaycheck.audit import AuditReport, Conclusion, Family, SourceFile, audit_sources

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audit"
OPEN, CLOSED = Conclusion.OPEN_RELAY_POSSIBLE, Conclusion.NO_OPEN_RELAY_PATH


def audit(*names: str) -> AuditReport:
    return audit_sources([SourceFile(n, (FIXTURES / n).read_text()) for n in names], Family.OPENSMTPD)


def audit_text(text: str) -> AuditReport:
    return audit_sources([SourceFile("smtpd.conf", text)], Family.OPENSMTPD)


def codes(report: AuditReport) -> set[str]:
    return {f.code for f in report.findings}


CASES = [
    (["opensmtpd/smtpd.conf"], CLOSED, {"opensmtpd-not-internet-facing"}),
    (["opensmtpd/smtpd-mx.conf"], CLOSED, set()),
    (["opensmtpd/smtpd-open.conf"], OPEN, {"opensmtpd-relay-from-any"}),
    (["opensmtpd/smtpd-src-wide.conf"], OPEN, {"opensmtpd-relay-from-wide"}),
    (["opensmtpd/smtpd-mail-from.conf"], OPEN, {"opensmtpd-relay-mail-from"}),
    (["opensmtpd/smtpd-legacy.conf"], OPEN, {"opensmtpd-relay-from-any"}),
    (["opensmtpd/smtpd-legacy-good.conf"], CLOSED, set()),
    (["opensmtpd/smtpd-table.conf"], CLOSED, {"opensmtpd-relay-unverified-table", "opensmtpd-relay-from-rdns"}),
]


@pytest.mark.parametrize(("files", "conclusion", "expected"), CASES, ids=[" + ".join(c[0]) for c in CASES])
def test_fixture(files: list[str], conclusion: Conclusion, expected: set[str]) -> None:
    report = audit(*files)
    assert report.conclusion is conclusion, report.explanation
    assert codes(report) == expected


def test_open_rule_points_at_the_match_line_and_the_action() -> None:
    (found,) = audit("opensmtpd/smtpd-open.conf").findings
    assert found.location == "opensmtpd/smtpd-open.conf:13"
    assert found.evidence[1] == 'opensmtpd/smtpd-open.conf:9: action "outbound" relay'


HEAD = 'listen on egress\naction "out" relay\naction "local" mbox\n'


def test_first_match_wins() -> None:
    text = HEAD + 'match from any for any reject\nmatch from any for any action "out"\n'
    assert audit_text(text).conclusion is CLOSED
    text = HEAD + 'match from any for any action "local"\nmatch from any for any action "out"\n'
    assert audit_text(text).conclusion is CLOSED  # delivered locally, never relayed


def test_negated_from_local_is_everyone_else() -> None:
    assert audit_text(HEAD + 'match ! from local for any action "out"\n').conclusion is OPEN


def test_not_auth_is_everyone_without_credentials() -> None:
    assert audit_text(HEAD + 'match !auth from any for any action "out"\n').conclusion is OPEN


def test_auth_required_is_closed() -> None:
    assert audit_text(HEAD + 'match auth from any for any action "out"\n').conclusion is CLOSED


def test_for_domain_catch_all_regex_table() -> None:
    text = HEAD + "table all { .* }\n" + 'match from any for domain regex <all> action "out"\n'
    assert audit_text(text).conclusion is OPEN


def test_tag_on_an_outside_listener() -> None:
    text = 'listen on egress tag MX\naction "out" relay\nmatch tag MX from any for any action "out"\n'
    assert audit_text(text).conclusion is OPEN
    text = 'listen on lo0 tag MX\nlisten on egress\naction "out" relay\nmatch tag MX from any for any action "out"\n'
    assert audit_text(text).conclusion is CLOSED


def test_macros_and_continuations() -> None:
    text = 'anyone = "any"\nlisten on egress\naction "out" relay\nmatch from $anyone \\\n  for any action "out"\n'
    assert audit_text(text).conclusion is OPEN


def test_rule_without_action_is_unparsed() -> None:
    report = audit_text(HEAD + "match from any for any\n")
    assert codes(report) == {"unparsed-line"}
