"""The parsers never raise on arbitrary input (hypothesis): random text, and lines built from each
family's own vocabulary so that the deep paths (expansion, tables, ACL walks, JSON) are reached."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaycheck.audit import Conclusion, Family, SourceFile, audit_sources
from relaycheck.audit.detect import detect_family
from relaycheck.audit.render import render_html, render_json, render_markdown, render_text
from relaycheck.errors import UsageError

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VOCABULARY: dict[Family, list[str]] = {
    Family.POSTFIX: [
        "mynetworks =",
        "mynetworks_style = class",
        "smtpd_relay_restrictions =",
        "smtpd_recipient_restrictions =",
        "smtpd_client_restrictions = reject",
        "smtpd_restriction_classes = c",
        "c = permit",
        "relay_domains = com",
        "compatibility_level = 3.6",
        "inet_interfaces = loopback-only",
        "permit",
        "permit_mynetworks",
        "reject_unauth_destination",
        "warn_if_reject",
        "defer_if_permit",
        "check_sender_access",
        "inline:{ a=OK, { b = permit } }",
        "regexp:/t",
        "static:OK",
        "0.0.0.0/0",
        "[::1]/128",
        "$mynetworks",
        "${a?{b}:{c}}",
        "$(x)",
        "$$",
        "{",
        "}",
        ",",
        "-o",
        "smtp inet n - y - - smtpd",
        "smtpd pass - - y - - smtpd",
        "smtp/inet/mynetworks = 0.0.0.0/0",
        "/./ OK",
        "/(a+)+$/ OK",
    ],
    Family.EXIM: [
        "begin acl",
        "begin routers",
        "acl_check_rcpt:",
        "acl_smtp_rcpt = acl_check_rcpt",
        "hostlist relay_from_hosts =",
        "domainlist relay_to_domains = *",
        "domainlist local_domains = @",
        "percent_hack_domains = *",
        "local_interfaces = <; 127.0.0.1 ; ::1",
        "accept",
        "deny",
        "require",
        "hosts = *",
        "hosts = +relay_from_hosts",
        "!hosts = :",
        "domains = !+local_domains",
        "senders = x",
        "verify = recipient",
        "condition = ${if}",
        ".ifdef X",
        ".ifndef X",
        ".else",
        ".endif",
        "X = 0.0.0.0/0",
        "\\",
        "::::1",
        "<;",
        "dc_relay_nets='0.0.0.0/0'",
        "dc_local_interfaces='127.0.0.1 ; ::1'",
    ],
    Family.EXCHANGE: [
        "Identity : EX01\\Relay",
        "Name : Relay",
        "RemoteIPRanges : {0.0.0.0-255.255.255.255}",
        "RemoteIPRanges : {10.0.0.0(255.0.0.0), 1.2.3.4}",
        "PermissionGroups : AnonymousUsers",
        "AuthMechanism : Tls, ExternalAuthoritative",
        "Enabled : False",
        "User : NT AUTHORITY\\ANONYMOUS LOGON",
        "ExtendedRights : {ms-Exch-SMTP-Accept-Any-Recipient}",
        "Deny : True",
        "PS C:\\>",
        "    wrapped",
        "",
    ],
    Family.SENDMAIL: [
        "FEATURE(`promiscuous_relay')dnl",
        "FEATURE(relay_mail_from, `domain')",
        "dnl",
        "Connect:10 RELAY",
        "From:a@b RELAY",
        "To:com RELAY",
        "IPv6:2001:db8 RELAY",
        "Connect:IPv6:2001:db8:: RELAY",
        "192.168 OK",
        "# comment",
        "net",
    ],
    Family.OPENSMTPD: [
        "listen on egress",
        "listen on lo0 tag X",
        'action "out" relay',
        "action out mbox",
        "match from any for any action out",
        'match ! from local for domain regex <t> action "out"',
        "match auth from src <t> for any reject",
        "table t { .*, 0.0.0.0/0 }",
        "accept from any for any relay",
        "accept for local deliver to mbox",
        "m = any",
        "$m",
        "\\",
        "!",
        '"',
        "<",
    ],
}


def lines_of(family: Family) -> st.SearchStrategy[str]:
    words = st.sampled_from(VOCABULARY[family]) | st.text(max_size=12)
    line = st.lists(words, max_size=6).map(" ".join)
    indented = st.tuples(st.sampled_from(["", " ", "  ", "\t"]), line).map("".join)
    return st.lists(indented, max_size=25).map("\n".join)


def check(family: Family, *texts: str) -> None:
    sources = [SourceFile(f"fuzz{i}", t) for i, t in enumerate(texts)]
    report = audit_sources(sources, family)
    assert report.conclusion in set(Conclusion)
    for finding in report.findings:
        assert finding.code
        assert all("\n" not in e and "\x1b" not in e for e in finding.evidence)
    # every renderer copes with whatever ended up in the findings
    render_text(report)
    render_markdown(report)
    render_html(report)
    json.loads(render_json(report))


@pytest.mark.parametrize("family", list(Family))
@FUZZ
@given(text=st.text(max_size=400))
def test_random_text_never_raises(family: Family, text: str) -> None:
    check(family, text)


@pytest.mark.parametrize("family", list(Family))
@FUZZ
@given(data=st.data())
def test_vocabulary_never_raises(family: Family, data: st.DataObject) -> None:
    texts = data.draw(st.lists(lines_of(family), min_size=1, max_size=3))
    check(family, *texts)


JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
CONNECTOR_KEYS = st.sampled_from(
    [
        "Identity",
        "Name",
        "Server",
        "RemoteIPRanges",
        "PermissionGroups",
        "AuthMechanism",
        "Enabled",
        "User",
        "ExtendedRights",
        "Deny",
        "value",
        "LowerBound",
        "UpperBound",
        "RawIdentity",
        "Expression",
    ]
)


@FUZZ
@given(
    st.lists(st.dictionaries(CONNECTOR_KEYS, JSON_VALUES, max_size=8), max_size=4)
    | st.dictionaries(CONNECTOR_KEYS, JSON_VALUES, max_size=8)
    | JSON_VALUES
)
def test_exchange_json_never_raises(data: Any) -> None:
    check(Family.EXCHANGE, json.dumps(data))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["main.cf", "access", "smtpd.conf", "x.txt", "-"]), st.text(max_size=200))))
def test_detection_either_decides_or_raises_usage_error(files: list[tuple[str, str]]) -> None:
    try:
        family = detect_family([SourceFile(name, text) for name, text in files])
    except UsageError as exc:
        assert str(exc)
    else:
        assert family in set(Family)
