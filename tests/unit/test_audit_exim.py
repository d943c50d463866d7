"""Exim auditor: Debian's template and update-exim4.conf.conf, split conf.d, hand-written configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaycheck.audit import AuditReport, Conclusion, Family, SourceFile, audit_sources
from relaycheck.audit.command import read_directory
from relaycheck.audit.exim import parse, split_list

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audit"
OPEN, CLOSED = Conclusion.OPEN_RELAY_POSSIBLE, Conclusion.NO_OPEN_RELAY_PATH


def audit(*names: str) -> AuditReport:
    sources: list[SourceFile] = []
    for name in names:
        path = FIXTURES / name
        # a split directory is read the way the command reads it: main/ first, then acl/, router/…
        sources += read_directory(path) if path.is_dir() else [SourceFile(name, path.read_text())]
    return audit_sources(sources, Family.EXIM)


def audit_text(text: str) -> AuditReport:
    return audit_sources([SourceFile("exim4.conf", text)], Family.EXIM)


def codes(report: AuditReport) -> set[str]:
    return {f.code for f in report.findings}


T = "exim/exim4.conf.template"
CASES = [
    ([T], CLOSED, set()),
    (["exim/update-exim4.conf.conf"], CLOSED, set()),
    (["exim/update-exim4.conf.conf", T], CLOSED, set()),
    (["exim/update-exim4.conf.conf.open-nets"], OPEN, {"exim-relay-from-any"}),
    (["exim/update-exim4.conf.conf.open-nets", T], OPEN, {"exim-relay-from-any"}),
    (["exim/update-exim4.conf.conf.wide-nets"], OPEN, {"exim-relay-from-wide"}),
    (["exim/update-exim4.conf.conf.wide-nets", T], OPEN, {"exim-relay-from-wide"}),
    (["exim/update-exim4.conf.conf.any-domain"], OPEN, {"exim-relay-to-any-domain"}),
    (["exim/update-exim4.conf.conf.any-domain", T], OPEN, {"exim-relay-to-any-domain"}),
    (["exim/update-exim4.conf.conf.local-only"], CLOSED, {"exim-not-internet-facing"}),
    (["exim/update-exim4.conf.conf.local-only", T], CLOSED, {"exim-not-internet-facing"}),
    (["exim/exim-accept-any.conf"], OPEN, {"exim-acl-accept-any-host"}),
    (["exim/exim-relay-to-any.conf"], OPEN, {"exim-relay-to-any-domain"}),
    (["exim/exim-forged-sender.conf"], OPEN, {"exim-acl-accept-forged-sender"}),
    (["exim/exim-percent-hack.conf"], OPEN, {"exim-percent-hack"}),
    (["exim/exim-percent-hack-blocked.conf"], CLOSED, set()),
    (["exim/exim-relay-range.conf"], CLOSED, {"exim-relay-from-range"}),
    (["exim/exim-condition.conf"], CLOSED, {"exim-acl-unverified"}),
    (["exim/exim-no-rcpt-acl.conf"], CLOSED, set()),
    (["exim/conf.d"], CLOSED, set()),
]


@pytest.mark.parametrize(("files", "conclusion", "expected"), CASES, ids=[" + ".join(c[0]) for c in CASES])
def test_fixture(files: list[str], conclusion: Conclusion, expected: set[str]) -> None:
    report = audit(*files)
    assert report.conclusion is conclusion, report.explanation
    assert codes(report) == expected


def test_debconf_setting_is_evidence_for_the_template_hostlist() -> None:
    report = audit("exim/update-exim4.conf.conf.wide-nets", T)
    (found,) = report.findings
    assert found.location == "exim/exim4.conf.template:40"
    assert any("dc_relay_nets='192.168.1.0/24 ; 78.40.0.0/14'" in e for e in found.evidence)
    assert "78.40.0.0/14" in found.detail


def test_accept_any_host_points_at_the_statement() -> None:
    report = audit("exim/exim-accept-any.conf")
    (found,) = report.findings
    assert found.location == "exim/exim-accept-any.conf:20"
    assert found.evidence[0].endswith("accept  hosts         = *")


def test_no_rcpt_acl_is_explained() -> None:
    report = audit("exim/exim-no-rcpt-acl.conf")
    assert "acl_smtp_rcpt is not set" in report.explanation


def test_split_conf_d_with_open_relay_nets(tmp_path: Path) -> None:
    main = (FIXTURES / "exim/conf.d/main/01_exim4-config_listmacrosdefs").read_text()
    main = main.replace("MAIN_RELAY_NETS = : 127.0.0.1 : ::::1", "MAIN_RELAY_NETS = : 127.0.0.1 : ::::1 : 0.0.0.0/0")
    acl = (FIXTURES / "exim/conf.d/acl/00_exim4-config_header").read_text()
    rcpt = (FIXTURES / "exim/conf.d/acl/30_exim4-config_check_rcpt").read_text()
    sources = [SourceFile("main/01", main), SourceFile("acl/00", acl), SourceFile("acl/30", rcpt)]
    report = audit_sources(sources, Family.EXIM)
    assert codes(report) == {"exim-relay-from-any"}
    assert report.findings[0].location == "main/01:15"  # hostlist relay_from_hosts = MAIN_RELAY_NETS
    assert any("main/01:13: MAIN_RELAY_NETS" in e for e in report.findings[0].evidence)


@pytest.mark.parametrize(
    ("value", "items"),
    [
        (": 127.0.0.1 : ::::1", ["", "127.0.0.1", "::1"]),
        ("<; 127.0.0.1 ; ::1 ; 10.0.0.0/8", ["127.0.0.1", "::1", "10.0.0.0/8"]),
        ("@ : example.org", ["@", "example.org"]),
        ("!192.168.1.5 : 192.168.1.0/24", ["!192.168.1.5", "192.168.1.0/24"]),
    ],
)
def test_split_list(value: str, items: list[str]) -> None:
    assert split_list(value) == items


def test_ifdef_else_and_continuations() -> None:
    text = (
        "FOO = 1\n"
        ".ifdef FOO\n"
        "hostlist relay_from_hosts = 127.0.0.1 : \\\n"
        "    10.0.0.0/8\n"
        ".else\n"
        "hostlist relay_from_hosts = 0.0.0.0/0\n"
        ".endif\n"
        ".ifndef BAR\n"
        "domainlist relay_to_domains = BAR_DEFAULT\n"
        ".endif\n"
    )
    config = parse([SourceFile("exim4.conf", text)])
    assert config.lists["relay_from_hosts"].value == "127.0.0.1 : 10.0.0.0/8"
    assert config.lists["relay_from_hosts"].line.number == 3
    assert config.lists["relay_to_domains"].value == "BAR_DEFAULT"


def test_negated_wide_item_before_everyone_still_matches_strangers() -> None:
    text = (
        "hostlist relay_from_hosts = !192.168.1.5 : *\nacl_smtp_rcpt = rcpt\nbegin acl\nrcpt:\n"
        "  accept hosts = +relay_from_hosts\n  require domains = @\n  accept\n"
    )
    assert audit_text(text).conclusion is OPEN


def test_deny_that_a_stranger_can_avoid_does_not_close() -> None:
    text = (
        "acl_smtp_rcpt = rcpt\nbegin acl\nrcpt:\n"
        "  deny dnslists = zen.spamhaus.org\n  deny local_parts = ^.*[@%!/|]\n  accept hosts = *\n"
    )
    assert audit_text(text).conclusion is OPEN


def test_unconditional_deny_closes() -> None:
    text = "acl_smtp_rcpt = rcpt\nbegin acl\nrcpt:\n  deny\n  accept hosts = *\n"
    assert audit_text(text).conclusion is CLOSED


def test_not_authenticated_accept_opens() -> None:
    text = "acl_smtp_rcpt = rcpt\nbegin acl\nrcpt:\n  accept !authenticated = *\n"
    assert codes(audit_text(text)) == {"exim-acl-accept-any-host"}


def test_garbage_in_the_acl_section_is_unparsed_not_fatal() -> None:
    text = "acl_smtp_rcpt = rcpt\nbegin acl\nrcpt:\n  this is not exim\n  accept authenticated = *\n"
    report = audit_text(text)
    assert codes(report) == {"unparsed-line"}
    assert report.findings[0].location == "exim4.conf:4"
    assert report.conclusion is CLOSED


# ---- the relay decision after RCPT: acl_smtp_predata / acl_smtp_data --------------------------

MAIN = (
    "domainlist local_domains = @ : example.net\ndomainlist relay_to_domains =\nhostlist relay_from_hosts = {hosts}\n"
)
RCPT_ACCEPTS_ALL = "acl_check_rcpt:\n  accept  hosts = :\n  require verify = recipient\n  accept\n"
FORANY_DOMAIN = "${if forany{<, $recipients}{!match_domain{${domain:$item}}{+local_domains : +relay_to_domains}}}"
FORANY_ADDRESS = "${if forany{<, $recipients}{!match_address{$item}{*@+local_domains}}}"


def later_acl_config(
    option: str, body: str, *, hosts: str = "127.0.0.1", rcpt: str = RCPT_ACCEPTS_ALL, name: str = "later"
) -> str:
    return (
        MAIN.format(hosts=hosts)
        + f"acl_smtp_rcpt = acl_check_rcpt\n{option} = {name}\nbegin acl\n{rcpt}\nlater:\n{body}"
    )


def relay_check(condition: str) -> str:
    return (
        "  accept  hosts = :\n  accept  hosts = +relay_from_hosts\n  accept  authenticated = *\n"
        f"  deny    message = relay not permitted\n          condition = {condition}\n  accept\n"
    )


@pytest.mark.parametrize("option", ["acl_smtp_predata", "acl_smtp_data"])
@pytest.mark.parametrize("condition", [FORANY_DOMAIN, FORANY_ADDRESS], ids=["match_domain", "match_address"])
def test_relay_refused_after_rcpt_is_closed(option: str, condition: str) -> None:
    report = audit_text(later_acl_config(option, relay_check(condition)))
    assert report.conclusion is CLOSED, report.explanation
    assert codes(report) == set()
    assert f"{option} 'later' refuses the message (exim4.conf:" in report.explanation


def test_without_the_later_acl_the_same_rcpt_acl_relays() -> None:
    """The control for the test above: the RCPT ACL alone accepts every foreign recipient."""
    text = MAIN.format(hosts="127.0.0.1") + f"acl_smtp_rcpt = acl_check_rcpt\nbegin acl\n{RCPT_ACCEPTS_ALL}"
    assert codes(audit_text(text)) == {"exim-acl-accept-any-host"}


def test_later_refusal_points_at_the_deny_statement() -> None:
    report = audit_text(later_acl_config("acl_smtp_predata", relay_check(FORANY_DOMAIN)))
    deny_line = (
        later_acl_config("acl_smtp_predata", relay_check(FORANY_DOMAIN))
        .splitlines()
        .index("  deny    message = relay not permitted")
    )
    assert f"(exim4.conf:{deny_line + 1})" in report.explanation


def test_condition_split_over_continuation_lines_is_recognised() -> None:
    split = FORANY_DOMAIN.replace("}{!match", "}\\\n              {!match")
    assert "\\\n" in split
    assert audit_text(later_acl_config("acl_smtp_predata", relay_check(split))).conclusion is CLOSED


@pytest.mark.parametrize(
    "body",
    [
        "  accept\n",  # a later ACL that takes everything
        "  deny    condition = ${if forany{<, $recipients}{!match_domain{${domain:$item}}{*}}}\n  accept\n",
        "  deny    condition = ${if eq{$acl_m0}{1}}\n  accept\n",  # a condition the audit cannot read
        # an accept it cannot evaluate comes first: the message may get through there
        "  accept  condition = ${lookup{$sender_host_address}lsearch{/etc/exim/ok}{yes}{no}}\n"
        f"  deny    condition = {FORANY_DOMAIN}\n  accept\n",
    ],
    ids=["accept-all", "domain-list-matches-everything", "unreadable-condition", "unknown-accept-first"],
)
def test_later_acl_that_may_let_the_relay_through_stays_open(body: str) -> None:
    report = audit_text(later_acl_config("acl_smtp_predata", body))
    assert report.conclusion is OPEN, report.explanation
    assert "exim-acl-accept-any-host" in codes(report)


def test_later_acl_that_is_not_defined_is_not_counted_on() -> None:
    text = later_acl_config("acl_smtp_predata", relay_check(FORANY_DOMAIN), name="missing_acl")
    assert audit_text(text).conclusion is OPEN


def test_later_acl_trusting_everyone_keeps_the_relay_from_any_finding() -> None:
    """relay_from_hosts = 0.0.0.0/0: the predata ACL's 'accept hosts = +relay_from_hosts' lets it pass."""
    stock_rcpt = (
        "acl_check_rcpt:\n  accept  hosts = +relay_from_hosts\n"
        "  require message = relay not permitted\n          domains = +local_domains\n  accept\n"
    )
    text = later_acl_config("acl_smtp_predata", relay_check(FORANY_DOMAIN), hosts="0.0.0.0/0", rcpt=stock_rcpt)
    assert codes(audit_text(text)) == {"exim-relay-from-any"}


def test_wide_relay_network_is_judged_through_the_later_acl() -> None:
    """A wide outside network in relay_from_hosts passes the predata ACL's accept too: still a finding;
    with a predata ACL that refuses every outside domain regardless of the client, it is not."""
    stock_rcpt = (
        "acl_check_rcpt:\n  accept  hosts = +relay_from_hosts\n"
        "  require message = relay not permitted\n          domains = +local_domains\n  accept\n"
    )
    passes = later_acl_config("acl_smtp_predata", relay_check(FORANY_DOMAIN), hosts="78.0.0.0/8", rcpt=stock_rcpt)
    assert codes(audit_text(passes)) == {"exim-relay-from-wide"}
    refuses_all = f"  deny    condition = {FORANY_DOMAIN}\n  accept\n"
    closed = later_acl_config("acl_smtp_predata", refuses_all, hosts="78.0.0.0/8", rcpt=stock_rcpt)
    assert audit_text(closed).conclusion is CLOSED
