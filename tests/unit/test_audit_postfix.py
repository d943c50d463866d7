"""Postfix auditor: realistic main.cf / master.cf / postconf dumps, good and bad, and the
building blocks (``$name`` expansion, built-in defaults, master.cf ``-o`` overrides, tables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaycheck.audit import AuditReport, Conclusion, Family, SourceFile, audit_sources
from relaycheck.audit.postfix import table_paths
from relaycheck.audit.postfix_config import Expander, Param, compat_level, parse, split_braced

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audit"
OPEN, CLOSED = Conclusion.OPEN_RELAY_POSSIBLE, Conclusion.NO_OPEN_RELAY_PATH


def audit(*names: str) -> AuditReport:
    return audit_sources([SourceFile(n, (FIXTURES / n).read_text()) for n in names], Family.POSTFIX)


def audit_text(main: str, master: str | None = None) -> AuditReport:
    sources = [SourceFile("main.cf", main)]
    if master is not None:
        sources.append(SourceFile("master.cf", master))
    return audit_sources(sources, Family.POSTFIX)


def codes(report: AuditReport) -> set[str]:
    return {f.code for f in report.findings}


CASES = [
    # (files, conclusion, exact set of finding codes)
    (["postfix/debian-main.cf"], CLOSED, set()),
    (["postfix/debian-main.cf", "postfix/debian-master.cf"], CLOSED, set()),
    (["postfix/postconf-n.txt"], CLOSED, set()),
    (["postfix/postconf-n-open.txt"], OPEN, {"postfix-mynetworks-everyone"}),
    (["postfix/mynetworks-public.cf"], OPEN, {"postfix-mynetworks-public"}),
    (["postfix/mynetworks-range.cf"], CLOSED, {"postfix-mynetworks-public-range"}),
    (["postfix/style-class.cf"], OPEN, {"postfix-mynetworks-style-class"}),
    (["postfix/style-subnet.cf"], CLOSED, {"postfix-mynetworks-style-subnet"}),
    (["postfix/permit-before-check.cf"], OPEN, {"postfix-permit-before-relay-check"}),
    (["postfix/no-relay-check.cf"], OPEN, {"postfix-no-reject-unauth-destination"}),
    (["postfix/warn-if-reject.cf"], OPEN, {"postfix-relay-check-neutralized"}),
    (["postfix/relay-domains-tld.cf"], OPEN, {"postfix-relay-domains-wildcard"}),
    (["postfix/relay-domains-good.cf"], CLOSED, set()),
    (["postfix/sender-access/main.cf", "postfix/sender-access/sender_access"], OPEN, {"postfix-sender-access-permits"}),
    (["postfix/sender-access-after/main.cf", "postfix/sender-access-after/sender_access"], CLOSED, set()),
    (["postfix/helo-access.cf"], OPEN, {"postfix-helo-access-permits"}),
    (
        ["postfix/recipient-access/main.cf", "postfix/recipient-access/relay_recipients"],
        OPEN,
        {"postfix-recipient-access-permits-any"},
    ),
    (
        ["postfix/client-access/main.cf", "postfix/client-access/client_access"],
        OPEN,
        {"postfix-client-access-permits-wide"},
    ),
    (["postfix/table-unverified.cf"], CLOSED, {"postfix-access-table-unverified"}),
    (["postfix/permit-mx-backup.cf"], CLOSED, {"postfix-permit-mx-backup"}),
    (["postfix/tls-clientcerts-public.cf"], OPEN, {"postfix-tls-clientcerts-public-ca"}),
    (["postfix/tls-clientcerts-private.cf"], CLOSED, {"postfix-permit-tls-all-clientcerts"}),
    (["postfix/auth-without-tls.cf"], CLOSED, {"postfix-auth-without-tls"}),
    (["postfix/percent-hack/main.cf", "postfix/percent-hack/recipient_access"], CLOSED, {"postfix-percent-hack-relay"}),
    (["postfix/duplicate.cf"], CLOSED, {"postfix-duplicate-parameter"}),
    (["postfix/unknown-restriction.cf"], CLOSED, {"postfix-unknown-restriction"}),
    (["postfix/loopback-only.cf"], CLOSED, {"postfix-not-internet-facing"}),
    (["postfix/reinject-main.cf", "postfix/reinject-open-master.cf"], OPEN, {"postfix-mynetworks-everyone"}),
    (["postfix/reinject-main.cf", "postfix/reinject-good-master.cf"], CLOSED, {"postfix-not-internet-facing"}),
    (["postfix/postscreen-main.cf", "postfix/postscreen-master.cf"], OPEN, {"postfix-sender-access-permits"}),
    (
        ["postfix/debian-main.cf", "postfix/postconf-P.txt"],
        OPEN,
        {"postfix-no-reject-unauth-destination", "postfix-auth-without-tls"},
    ),
]


@pytest.mark.parametrize(("files", "conclusion", "expected"), CASES, ids=[" + ".join(c[0]) for c in CASES])
def test_fixture(files: list[str], conclusion: Conclusion, expected: set[str]) -> None:
    report = audit(*files)
    assert report.conclusion is conclusion, report.explanation
    assert codes(report) == expected


def test_mynetworks_everyone_points_at_the_line_and_says_who_may_relay() -> None:
    report = audit("postfix/postconf-n-open.txt")
    (found,) = report.findings
    assert found.location == "postfix/postconf-n-open.txt:10"
    assert found.evidence == ("postfix/postconf-n-open.txt:10: mynetworks = 127.0.0.0/8 10.20.0.0/16 0.0.0.0/0",)
    assert "Any host on the Internet may relay" in found.detail
    assert "0.0.0.0/0" in found.detail
    assert found.remediation and "mynetworks" in found.remediation


def test_master_cf_override_is_located_on_its_own_physical_line() -> None:
    report = audit("postfix/reinject-main.cf", "postfix/reinject-open-master.cf")
    (found,) = report.findings
    assert found.location == "postfix/reinject-open-master.cf:15"
    assert "Service 10025" in found.detail
    assert "-o mynetworks=0.0.0.0/0" in found.evidence[0]


def test_expanded_parameter_lines_are_evidence() -> None:
    report = audit("postfix/postscreen-main.cf", "postfix/postscreen-master.cf")
    (found,) = report.findings
    assert found.location == "postfix/postscreen-master.cf:3"
    assert any(e.startswith("postfix/postscreen-main.cf:8: mua_relay_restrictions") for e in found.evidence)
    assert "Service smtpd" in found.detail  # the smtpd behind postscreen, not the submission service


def test_debian_master_submission_is_evaluated_with_its_overrides() -> None:
    # submission: -o smtpd_relay_restrictions=permit_sasl_authenticated,reject; TLS-only AUTH
    report = audit("postfix/debian-main.cf", "postfix/debian-master.cf")
    assert "smtp, submission" in report.explanation


# ---- built-in defaults and compatibility_level --------------------------------------------


def test_unset_relay_restrictions_use_the_default_with_defer_unauth_destination() -> None:
    report = audit_text("compatibility_level = 3.6\nmynetworks = 127.0.0.0/8\n")
    assert report.conclusion is CLOSED


def test_compatibility_level_zero_with_nothing_set_is_not_an_open_relay() -> None:
    # compatibility_level < 1 makes the smtpd_relay_restrictions default empty, but with nothing
    # set at all no Postfix version relays: 3.x refuses to start smtpd (or keeps its default
    # check), and before 2.10 smtpd_recipient_restrictions defaulted to the relay check.
    report = audit_text("myhostname = mx.example.com\nmynetworks_style = host\n")
    assert report.conclusion is CLOSED
    assert report.findings == ()


def test_compatibility_level_zero_with_an_explicit_list_without_check_is_open() -> None:
    main = "myhostname = mx.example.com\nmynetworks_style = host\n"
    main += "smtpd_recipient_restrictions = permit_mynetworks, reject_rbl_client zen.spamhaus.org\n"
    report = audit_text(main)
    assert codes(report) == {"postfix-no-reject-unauth-destination"}
    (found,) = report.findings
    assert found.location == "main.cf:3"
    assert any("built-in default" in e for e in found.evidence)  # the (empty) smtpd_relay_restrictions


def test_mynetworks_style_default_depends_on_compatibility_level() -> None:
    assert audit_text("compatibility_level = 3.6\n").findings == ()
    old = audit_text("compatibility_level = 1\n")
    assert codes(old) == {"postfix-mynetworks-style-subnet"}


def test_debian_ipv4_mapped_loopback_is_not_an_outside_range() -> None:
    report = audit_text("compatibility_level = 3.6\nmynetworks = [::ffff:127.0.0.0]/104 [::1]/128\n")
    assert report.findings == ()


def test_client_restrictions_reject_closes_every_path() -> None:
    report = audit_text("compatibility_level = 3.6\nmynetworks = 0.0.0.0/0\nsmtpd_client_restrictions = reject\n")
    assert report.conclusion is CLOSED
    assert "smtpd_client_restrictions" in report.explanation


def test_mynetworks_population_is_refused_by_an_earlier_relay_check() -> None:
    main = "compatibility_level = 3.6\nmynetworks = 0.0.0.0/0\n"
    main += "smtpd_relay_restrictions = reject_unauth_destination, permit_mynetworks\n"
    assert audit_text(main).conclusion is CLOSED


def test_relay_list_permit_is_not_enough_when_the_recipient_list_checks() -> None:
    main = "compatibility_level = 3.6\nsmtpd_relay_restrictions = permit\n"
    main += "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n"
    assert audit_text(main).conclusion is CLOSED


def test_defer_if_permit_turns_a_later_permit_into_a_deferral() -> None:
    main = "compatibility_level = 3.6\nsmtpd_relay_restrictions = defer_if_permit, permit\n"
    assert audit_text(main).conclusion is CLOSED


def test_permit_naked_ip_address_lets_any_client_relay() -> None:
    main = "compatibility_level = 3.6\n"
    main += "smtpd_relay_restrictions = permit_naked_ip_address, reject_unauth_destination\n"
    report = audit_text(main)
    assert codes(report) == {"postfix-permit-before-relay-check"}
    assert "IP address as HELO" in report.findings[0].detail


def test_restriction_class_used_directly_in_a_list() -> None:
    main = "compatibility_level = 3.6\nsmtpd_restriction_classes = open_up\nopen_up = permit\n"
    main += "smtpd_relay_restrictions = permit_mynetworks, open_up, reject_unauth_destination\n"
    report = audit_text(main)
    assert report.conclusion is OPEN
    assert any(e.startswith("main.cf:3: open_up = permit") for e in report.findings[0].evidence)


def test_static_ok_recipient_table_permits_everything() -> None:
    main = "compatibility_level = 3.6\n"
    main += "smtpd_relay_restrictions = check_recipient_access static:OK, reject_unauth_destination\n"
    assert codes(audit_text(main)) == {"postfix-recipient-access-permits-any"}


def test_bare_table_in_the_sender_list_position_is_a_sender_lookup() -> None:
    main = "compatibility_level = 3.6\n"
    main += "smtpd_relay_restrictions = inline:{ example.com=OK }, reject_unauth_destination\n"
    # a bare table in smtpd_relay_restrictions is a recipient lookup: only mail *to* example.com
    assert audit_text(main).conclusion is CLOSED
    main = "compatibility_level = 3.6\nsmtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
    main += "smtpd_sender_restrictions = inline:{ example.com=OK }\n"
    # a permit in the sender list ends that list only: the relay list still refuses
    assert audit_text(main).conclusion is CLOSED


def test_relay_domains_static_table_matches_everything() -> None:
    main = "compatibility_level = 3.6\nrelay_domains = static:ALL\n"
    assert codes(audit_text(main)) == {"postfix-relay-domains-wildcard"}


def test_relay_domains_localhost_is_not_a_tld() -> None:
    main = "compatibility_level = 3.6\nrelay_domains = localhost, example.org\n"
    assert audit_text(main).findings == ()


def test_inet_interfaces_loopback_list_is_not_reachable() -> None:
    main = "compatibility_level = 3.6\ninet_interfaces = 127.0.0.1, [::1]\nmynetworks = 0.0.0.0/0\n"
    assert audit_text(main).conclusion is CLOSED


def test_auth_without_tls_not_reported_when_tls_is_required() -> None:
    main = "compatibility_level = 3.6\nsmtpd_sasl_auth_enable = yes\nsmtpd_tls_security_level = encrypt\n"
    assert audit_text(main).findings == ()


def test_unparsed_line_is_reported_with_its_number() -> None:
    report = audit_text("compatibility_level = 3.6\nthis is not a parameter\n")
    (found,) = report.findings
    assert found.code == "unparsed-line"
    assert found.title == "Could not parse line 2"
    assert found.location == "main.cf:2"


def test_nothing_understood_is_could_not_parse() -> None:
    report = audit_text("just some words\nand more\n")
    assert report.conclusion is Conclusion.COULD_NOT_PARSE


def test_postscreen_pass_service_without_master_overrides_uses_main() -> None:
    master = "smtp inet n - y - 1 postscreen\nsmtpd pass - - y - - smtpd\n"
    report = audit_text("compatibility_level = 3.6\nmynetworks = 0.0.0.0/0\n", master)
    assert report.conclusion is OPEN
    assert "Service smtpd" in report.findings[0].detail


def test_same_cause_in_two_services_is_one_finding() -> None:
    master = "smtp inet n - y - - smtpd\n2525 inet n - y - - smtpd\n"
    report = audit_text("compatibility_level = 3.6\nmynetworks = 0.0.0.0/0\n", master)
    (found,) = report.findings
    assert "Services smtp, 2525" in found.detail


# ---- building blocks -----------------------------------------------------------------------


def params(text: str) -> dict[str, Param]:
    return parse([SourceFile("main.cf", text)]).params


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$a", "A"),
        ("${a}", "A"),
        ("$(a)", "A"),
        ("${a?yes}", "yes"),
        ("${empty?yes}", ""),
        ("${a:no}", ""),
        ("${empty:no}", "no"),
        ("${a?{x y}:{z}}", "x y"),
        ("${empty?{x y}:{z}}", "z"),
        ("$$a", "$a"),
        ("$unknown stays", "$unknown stays"),
        ("$b", "A and A"),
        # Postfix 3.6+ relational expressions, as plain `postconf` prints unset parameters
        ("${{$compatibility_level} <level {2} ? {subnet} : {host}}", "host"),
        ("${{$compatibility_level} <level {3.10} ? {old} : {new}}", "old"),
        ("${{$a} == {A} ? {same} : {other}}", "same"),
        ("${{$a} != {A} ? {differ}}", ""),
    ],
)
def test_expansion(text: str, expected: str) -> None:
    expander = Expander(params("a = A\nempty =\nb = $a and ${a}\ncompatibility_level = 3.6\n"), (3, 6))
    assert expander.expand(text) == expected


# What plain `postconf` (or `postconf -d`) prints for unset parameters, verbatim from Postfix 3.7.
POSTCONF_DEFAULTS = (
    "compatibility_level = LEVEL\n"
    "mynetworks_style = ${{$compatibility_level} <level {2} ? {subnet} : {host}}\n"
    "relay_domains = ${{$compatibility_level} <level {2} ? {$mydestination} : {}}\n"
    "smtpd_recipient_restrictions =\n"
    "smtpd_relay_restrictions = ${{$compatibility_level} <level {1} ? {} : "
    "{permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination}}\n"
)


@pytest.mark.parametrize(("level", "mynetworks_style"), [("3.6", "host"), ("1", "subnet")])
def test_full_postconf_output_with_relational_defaults(level: str, mynetworks_style: str) -> None:
    report = audit_text(POSTCONF_DEFAULTS.replace("LEVEL", level))
    assert report.conclusion is CLOSED  # defer_unauth_destination from level 1 on
    assert ("postfix-mynetworks-style-subnet" in codes(report)) == (mynetworks_style == "subnet")


def test_master_cf_alone_says_main_cf_was_missing() -> None:
    report = audit_sources([SourceFile("master.cf", "smtp inet n - y - - smtpd\n")], Family.POSTFIX)
    assert "No main.cf settings were given" in report.explanation


def test_expansion_cycles_terminate() -> None:
    expander = Expander(params("a = $b\nb = $a\n"), (3, 6))
    assert "$" in expander.expand("$a")


def test_master_override_beats_main_and_main_beats_default() -> None:
    config = parse([SourceFile("main.cf", "mynetworks = 10.0.0.0/8\n")])
    expander = Expander(
        config.params, compat_level(config.params), {"mynetworks": Param("mynetworks", "1.2.3.4", None)}
    )
    assert expander.value("mynetworks") == "1.2.3.4"
    assert Expander(config.params, (3, 6)).value("mynetworks") == "10.0.0.0/8"
    assert Expander(config.params, (3, 6)).value("mynetworks_style") == "host"
    assert Expander(config.params, (0,)).value("mynetworks_style") == "subnet"


def test_compat_level_parsing() -> None:
    assert compat_level(params("compatibility_level = 3.6\n")) == (3, 6)
    assert compat_level(params("")) == (0,)
    assert compat_level(params("compatibility_level = 2\n")) == (2,)


def test_split_braced_keeps_groups() -> None:
    assert split_braced("a, b c,{ d = e, f }  inline:{ x=1, y=2 }") == [
        "a",
        "b",
        "c",
        "{ d = e, f }",
        "inline:{ x=1, y=2 }",
    ]


def test_master_cf_parsing_of_o_forms() -> None:
    master = (
        "submission inet n - y - - smtpd\n"
        "  -o syslog_name=postfix/submission\n"
        "  -o { smtpd_relay_restrictions = permit_sasl_authenticated, reject }\n"
        "  -osmtpd_tls_security_level=encrypt\n"
        "  -o broken\n"
    )
    config = parse([SourceFile("master.cf", master)])
    (service,) = config.services
    assert service.overrides["smtpd_relay_restrictions"].value == "permit_sasl_authenticated, reject"
    assert service.overrides["smtpd_relay_restrictions"].line is not None
    assert service.overrides["smtpd_relay_restrictions"].line.number == 3
    assert service.overrides["smtpd_tls_security_level"].value == "encrypt"
    assert [f.code for f in config.findings] == ["unparsed-line"]


def test_postconf_p_lines_become_service_overrides() -> None:
    config = parse([SourceFile("postconf-P.txt", "smtp/inet/mynetworks = 0.0.0.0/0\n")])
    assert config.service_overrides[("smtp", "inet")]["mynetworks"].value == "0.0.0.0/0"


def test_table_paths_resolve_config_directory_to_the_main_cf_directory() -> None:
    main = "smtpd_relay_restrictions = check_sender_access hash:$config_directory/sender_access, reject\n"
    assert table_paths([SourceFile("/srv/pf/main.cf", main)]) == ["/srv/pf/sender_access"]
    main += "config_directory = /etc/postfix\n"
    assert table_paths([SourceFile("/srv/pf/main.cf", main)]) == ["/etc/postfix/sender_access"]


def test_regexp_table_with_catastrophic_pattern_is_not_evaluated() -> None:
    main = "compatibility_level = 3.6\n"
    main += "smtpd_relay_restrictions = check_recipient_access regexp:/etc/postfix/r, reject_unauth_destination\n"
    table = "/(a+)+$/ OK\n/[unclosed/ OK\n"
    report = audit_sources([SourceFile("main.cf", main), SourceFile("/etc/postfix/r", table)], Family.POSTFIX)
    assert report.conclusion is CLOSED
