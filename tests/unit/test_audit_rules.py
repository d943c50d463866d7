"""Every rule has a realistic bad fixture that triggers it and a good one that does not; every code
is documented in docs/findings.md; the rule table itself is consistent; detection and network widths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relaycheck.audit import AuditReport, Family, SourceFile, audit_sources
from relaycheck.audit.command import read_directory
from relaycheck.audit.detect import detect_family, family_of
from relaycheck.audit.netclass import Width, parse_network, parse_range, sendmail_prefix, width_of_network
from relaycheck.audit.rules import audit_codes, clean, opens_relay
from relaycheck.errors import UsageError
from relaycheck.findings import fix_for
from relaycheck.model import Severity

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "audit"

# code -> (bad fixture files, good fixture files): the good one is the fixed or stock version.
RULE_FIXTURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "postfix-mynetworks-everyone": (("postfix/postconf-n-open.txt",), ("postfix/postconf-n.txt",)),
    "postfix-mynetworks-public": (("postfix/mynetworks-public.cf",), ("postfix/mynetworks-range.cf",)),
    "postfix-mynetworks-public-range": (("postfix/mynetworks-range.cf",), ("postfix/debian-main.cf",)),
    "postfix-mynetworks-style-class": (("postfix/style-class.cf",), ("postfix/debian-main.cf",)),
    "postfix-mynetworks-style-subnet": (("postfix/style-subnet.cf",), ("postfix/debian-main.cf",)),
    "postfix-permit-before-relay-check": (("postfix/permit-before-check.cf",), ("postfix/debian-main.cf",)),
    "postfix-no-reject-unauth-destination": (("postfix/no-relay-check.cf",), ("postfix/debian-main.cf",)),
    "postfix-relay-check-neutralized": (("postfix/warn-if-reject.cf",), ("postfix/debian-main.cf",)),
    "postfix-relay-domains-wildcard": (("postfix/relay-domains-tld.cf",), ("postfix/relay-domains-good.cf",)),
    "postfix-sender-access-permits": (
        ("postfix/sender-access/main.cf", "postfix/sender-access/sender_access"),
        ("postfix/sender-access-after/main.cf", "postfix/sender-access-after/sender_access"),
    ),
    "postfix-helo-access-permits": (("postfix/helo-access.cf",), ("postfix/debian-main.cf",)),
    "postfix-recipient-access-permits-any": (
        ("postfix/recipient-access/main.cf", "postfix/recipient-access/relay_recipients"),
        ("postfix/percent-hack-off/main.cf", "postfix/percent-hack-off/recipient_access"),
    ),
    "postfix-client-access-permits-wide": (
        ("postfix/client-access/main.cf", "postfix/client-access/client_access"),
        ("postfix/debian-main.cf",),
    ),
    "postfix-access-table-unverified": (
        ("postfix/table-unverified.cf",),
        ("postfix/percent-hack-off/main.cf", "postfix/percent-hack-off/recipient_access"),
    ),
    "postfix-permit-mx-backup": (("postfix/permit-mx-backup.cf",), ("postfix/relay-domains-good.cf",)),
    "postfix-tls-clientcerts-public-ca": (
        ("postfix/tls-clientcerts-public.cf",),
        ("postfix/tls-clientcerts-private.cf",),
    ),
    "postfix-permit-tls-all-clientcerts": (("postfix/tls-clientcerts-private.cf",), ("postfix/debian-main.cf",)),
    "postfix-auth-without-tls": (("postfix/auth-without-tls.cf",), ("postfix/postconf-n.txt",)),
    "postfix-percent-hack-relay": (
        ("postfix/percent-hack/main.cf", "postfix/percent-hack/recipient_access"),
        ("postfix/percent-hack-off/main.cf", "postfix/percent-hack-off/recipient_access"),
    ),
    "postfix-duplicate-parameter": (("postfix/duplicate.cf",), ("postfix/debian-main.cf",)),
    "postfix-unknown-restriction": (("postfix/unknown-restriction.cf",), ("postfix/debian-main.cf",)),
    "postfix-not-internet-facing": (("postfix/loopback-only.cf",), ("postfix/debian-main.cf",)),
    "exim-relay-from-any": (("exim/update-exim4.conf.conf.open-nets",), ("exim/update-exim4.conf.conf",)),
    "exim-relay-from-wide": (("exim/update-exim4.conf.conf.wide-nets",), ("exim/update-exim4.conf.conf",)),
    "exim-relay-from-range": (("exim/exim-relay-range.conf",), ("exim/exim4.conf.template",)),
    "exim-acl-accept-any-host": (("exim/exim-accept-any.conf",), ("exim/exim4.conf.template",)),
    "exim-acl-accept-forged-sender": (("exim/exim-forged-sender.conf",), ("exim/exim4.conf.template",)),
    "exim-acl-unverified": (("exim/exim-condition.conf",), ("exim/exim4.conf.template",)),
    "exim-relay-to-any-domain": (("exim/exim-relay-to-any.conf",), ("exim/conf.d",)),
    "exim-percent-hack": (("exim/exim-percent-hack.conf",), ("exim/exim-percent-hack-blocked.conf",)),
    "exim-not-internet-facing": (("exim/update-exim4.conf.conf.local-only",), ("exim/update-exim4.conf.conf",)),
    "exchange-anonymous-relay-everyone": (
        ("exchange/receive-connectors.txt", "exchange/adpermission-default-frontend.txt"),
        ("exchange/receive-connectors.txt",),
    ),
    "exchange-anonymous-relay-wide": (
        ("exchange/relay-public.txt", "exchange/adpermission-relay.txt"),
        ("exchange/relay-lan.txt", "exchange/adpermission-relay.txt"),
    ),
    "exchange-anonymous-relay-range": (
        ("exchange/relay-lan.txt", "exchange/adpermission-relay.txt"),
        ("exchange/receive-connectors.txt",),
    ),
    "exchange-anonymous-relay-unverified": (
        ("exchange/adpermission-default-frontend.txt",),
        ("exchange/receive-connectors.txt", "exchange/adpermission-default-frontend.txt"),
    ),
    "exchange-anonymous-users-relay-connector": (
        ("exchange/anonymous-users-relay.txt",),
        ("exchange/receive-connectors.txt",),
    ),
    "exchange-externally-secured-everyone": (
        ("exchange/externally-secured.txt",),
        ("exchange/receive-connectors.txt",),
    ),
    "exchange-externally-secured-wide": (
        ("exchange/externally-secured-wide.txt",),
        ("exchange/externally-secured-range.txt",),
    ),
    "exchange-externally-secured-range": (
        ("exchange/externally-secured-range.txt",),
        ("exchange/receive-connectors.txt",),
    ),
    "sendmail-promiscuous-relay": (("sendmail/sendmail-promiscuous.mc",), ("sendmail/sendmail.mc",)),
    "sendmail-relay-local-from": (("sendmail/sendmail-loose.mc",), ("sendmail/sendmail.mc",)),
    "sendmail-relay-mail-from": (("sendmail/sendmail-mailfrom.mc",), ("sendmail/sendmail.mc",)),
    "sendmail-loose-relay-check": (("sendmail/sendmail-mailfrom.mc",), ("sendmail/sendmail.mc",)),
    "sendmail-relay-entire-domain": (("sendmail/sendmail-loose.mc",), ("sendmail/sendmail.mc",)),
    "sendmail-relay-based-on-mx": (("sendmail/sendmail-mailfrom.mc",), ("sendmail/sendmail.mc",)),
    "sendmail-access-relay-wide": (("sendmail/access-wide",), ("sendmail/access",)),
    "sendmail-access-relay-range": (("sendmail/access-wide",), ("sendmail/access",)),
    "sendmail-access-from-relay": (("sendmail/access-from",), ("sendmail/sendmail.mc", "sendmail/access-from")),
    "sendmail-access-from-relay-inert": (("sendmail/sendmail.mc", "sendmail/access-from"), ("sendmail/access",)),
    "sendmail-access-relay-to-tld": (("sendmail/access-to-tld",), ("sendmail/access",)),
    "opensmtpd-relay-from-any": (("opensmtpd/smtpd-open.conf",), ("opensmtpd/smtpd-mx.conf",)),
    "opensmtpd-relay-from-wide": (("opensmtpd/smtpd-src-wide.conf",), ("opensmtpd/smtpd-src-range.conf",)),
    "opensmtpd-relay-from-range": (("opensmtpd/smtpd-src-range.conf",), ("opensmtpd/smtpd-mx.conf",)),
    "opensmtpd-relay-mail-from": (("opensmtpd/smtpd-mail-from.conf",), ("opensmtpd/smtpd-mx.conf",)),
    "opensmtpd-relay-from-rdns": (("opensmtpd/smtpd-table.conf",), ("opensmtpd/smtpd-mx.conf",)),
    "opensmtpd-relay-unverified-table": (("opensmtpd/smtpd-table.conf",), ("opensmtpd/smtpd-mx.conf",)),
    "opensmtpd-not-internet-facing": (("opensmtpd/smtpd.conf",), ("opensmtpd/smtpd-mx.conf",)),
}


def audit(names: tuple[str, ...]) -> AuditReport:
    sources: list[SourceFile] = []
    for name in names:
        path = FIXTURES / name
        sources += read_directory(path) if path.is_dir() else [SourceFile(name, path.read_text())]
    return audit_sources(sources, Family(names[0].split("/")[0]))

RULES = audit_codes()


def test_every_rule_has_fixtures() -> None:
    assert set(RULE_FIXTURES) == set(RULES) - {"unparsed-line"}


@pytest.mark.parametrize("code", sorted(RULE_FIXTURES))
def test_bad_fixture_triggers_and_good_fixture_does_not(code: str) -> None:
    bad, good = RULE_FIXTURES[code]
    bad_report = audit(bad)
    found = [f for f in bad_report.findings if f.code == code]
    assert found, f"{code} not found in {bad}"
    for item in found:  # say where and quote the line; a built-in default has no line, and says so
        assert item.evidence
        assert item.location or any("built-in default" in e for e in item.evidence)
    if opens_relay(code):
        assert bad_report.conclusion == "open-relay-possible"
    assert code not in {f.code for f in audit(good).findings}


def test_every_code_is_documented() -> None:
    docs = (ROOT / "docs" / "findings.md").read_text()
    documented = set(re.findall(r"^\| `([a-z][a-z0-9-]+)` \|", docs, re.MULTILINE))
    assert documented >= set(RULES)


@pytest.mark.parametrize("code", sorted(RULES))
def test_rule_table_is_consistent(code: str) -> None:
    rule = RULES[code]
    assert rule.code == code
    assert code == "unparsed-line" or code.split("-")[0] in {f.value for f in Family}
    assert rule.title and rule.meaning.endswith(".") and fix_for(code, "unknown")
    if rule.opens_relay:  # a relay path for outside clients is never minor
        assert rule.severity in {Severity.CRITICAL, Severity.HIGH}


def test_clean_neutralises_control_characters_and_caps_length() -> None:
    assert clean("a\x1b[2Jb\x00") == "a\\x1b[2Jb\\x00"
    assert clean("tab\tkept") == "tab\tkept"
    long = clean("x" * 1000)
    assert len(long) == 300 and long.endswith("…")


@pytest.mark.parametrize(
    ("name", "text", "family"),
    [
        ("/etc/postfix/main.cf", "", Family.POSTFIX),
        ("dump.txt", "mynetworks = 127.0.0.0/8\n", Family.POSTFIX),
        ("master.txt", "smtp      inet  n       -       y       -       -       smtpd\n", Family.POSTFIX),
        ("/etc/exim4/conf.d/acl/30_exim4-config_check_rcpt", "acl_check_rcpt:\n", Family.EXIM),
        ("configure", "begin acl\n", Family.EXIM),
        ("connectors.txt", "RemoteIPRanges : {0.0.0.0-255.255.255.255}\n", Family.EXCHANGE),
        ("out.json", '[{"PermissionGroups": 1}]', Family.EXCHANGE),
        ("/etc/mail/sendmail.mc", "", Family.SENDMAIL),
        ("access", "Connect:127.0.0.1 RELAY\n", Family.SENDMAIL),
        ("/etc/smtpd.conf", "", Family.OPENSMTPD),
        ("rules", "listen on egress\n", Family.OPENSMTPD),
    ],
)
def test_detection(name: str, text: str, family: Family) -> None:
    assert detect_family([SourceFile(name, text)]) is family


def test_a_postfix_access_table_next_to_main_cf_is_postfix() -> None:
    table = SourceFile("client_access", "192.168.1.0/24 OK\n10.0.0.0/8 OK\n62.96.0.0/13 OK\n")
    assert family_of(table) == (Family.SENDMAIL, False)  # alone it only hints at Sendmail
    assert detect_family([SourceFile("main.cf", ""), table]) is Family.POSTFIX


def test_detection_refuses_unknown_and_mixed() -> None:
    with pytest.raises(UsageError, match="cannot tell"):
        detect_family([SourceFile("notes.txt", "hello\n")])
    with pytest.raises(UsageError, match="different mail servers"):
        detect_family([SourceFile("main.cf", ""), SourceFile("smtpd.conf", "")])


@pytest.mark.parametrize(
    ("text", "width"),
    [
        ("0.0.0.0/0", Width.EVERYONE),
        ("::/0", Width.EVERYONE),
        ("82.0.0.0/8", Width.OUTSIDE_WIDE),
        ("82.64.0.0/16", Width.OUTSIDE_WIDE),
        ("82.64.0.0/17", Width.OUTSIDE_RANGE),
        ("[2001:db8::]/48", Width.OUTSIDE_WIDE),
        ("[2001:db8::]/64", Width.OUTSIDE_RANGE),
        ("203.0.113.7", Width.HOST),
        ("10.0.0.0/8", Width.NONE),
        ("100.64.0.0/10", Width.NONE),
        ("[::ffff:127.0.0.0]/104", Width.NONE),
        ("[fd00::]/8", Width.NONE),
    ],
)
def test_network_width(text: str, width: Width) -> None:
    network = parse_network(text)
    assert network is not None
    assert width_of_network(network) is width


def test_ranges_and_prefixes() -> None:
    assert [str(n) for n in parse_range("10.0.0.0-10.0.1.255") or []] == ["10.0.0.0/23"]
    assert parse_range("10.0.0.9-10.0.0.1") is None
    assert parse_range("not-a-range") is None
    assert str(sendmail_prefix("192.168")) == "192.168.0.0/16"
    assert sendmail_prefix("example.com") is None
