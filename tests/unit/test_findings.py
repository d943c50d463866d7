"""Hygiene findings: each code triggered by a minimal change to clean facts, and not by the clean ones."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relaycheck.findings import hygiene_findings, registry, with_remediation
from relaycheck.findings.registry import Source, fix_for
from relaycheck.model import DnsblResult, Finding, HygieneFacts, Reply, SessionFacts, Severity, TlsFacts
from relaycheck.smtp.wire import parse_enhanced

CATALOGUE = {c.code: c for c in registry.of_source(Source.HYGIENE)}
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOST = "mx.example.com"


def reply(text: str) -> Reply:
    code, _, rest = text.partition(" ")
    return Reply(int(code), (rest,), parse_enhanced(int(code), rest))


CLEAN_FACTS = SessionFacts(
    banner=reply("220 mx.example.com ESMTP"),
    banner_host=HOST,
    ehlo_host=HOST,
    extensions=("PIPELINING", "SIZE 10240000", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME"),
    starttls_offered=True,
)
CLEAN_TLS = TlsFacts(
    offered=True,
    established=True,
    version="TLSv1.3",
    cipher="TLS_AES_256_GCM_SHA384",
    cert_subject=HOST,
    cert_sans=(HOST,),
    cert_issuer="R11",
    not_before="2026-04-01T00:00:00+00:00",
    not_after="2026-06-30T00:00:00+00:00",
    self_signed=False,
    chain_verified=True,
    hostname_matches=True,
)
CLEAN = HygieneFacts(
    ptr_names=(HOST + ".",),  # PTR answers come with the root dot
    fcrdns=True,
    tls=CLEAN_TLS,
    auth_before_tls=(),
    auth_after_tls=("PLAIN", "LOGIN"),
    vrfy_postmaster=reply("252 2.0.0 postmaster"),
    vrfy_random=reply("550 5.1.1 <zq8x1@example.com>: Recipient address rejected: User unknown"),
    expn_postmaster=reply("502 5.5.2 Error: command not recognized"),
    auth_bypass_reply=reply("535 5.7.8 Error: authentication failed"),
    auth_bypass_relay=None,
    dnsbl=(
        DnsblResult("zen.spamhaus.org", False, (), "not listed"),
        DnsblResult("bl.spamcop.net", False, (), "not listed"),
    ),
)


def run(
    facts: dict[str, Any] | None = None,
    hygiene: dict[str, Any] | None = None,
    tls: dict[str, Any] | None = None,
    *,
    port: int = 25,
    family: str = "postfix",
) -> list[Finding]:
    h = replace(CLEAN, **(hygiene or {}))
    if tls:
        assert h.tls is not None
        h = replace(h, tls=replace(h.tls, **tls))
    return hygiene_findings(HOST, port, replace(CLEAN_FACTS, **(facts or {})), h, family, now=NOW)


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def test_clean_facts_give_no_finding() -> None:
    assert run() == []
    assert run(port=587) == []
    assert run(port=465) == []


def test_nothing_checked_gives_no_finding() -> None:
    assert hygiene_findings(HOST, 25, SessionFacts(), HygieneFacts(), "unknown", now=NOW) == []


# (code, facts changes, hygiene changes, tls changes, port)
TRIGGERS: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], int]] = [
    ("banner-version", {"banner": reply("220 mx.example.com ESMTP Exim 4.96 Thu, 01 Feb 2024 10:00:00 +0000")}, {},
     {}, 25),
    ("banner-version", {"banner": reply("220 mx.example.com ESMTP Postfix (Debian/GNU)")}, {}, {}, 25),
    ("masked-banner", {"banner": reply("220 ***********************************"), "banner_host": None}, {}, {}, 25),
    ("banner-ptr-mismatch", {"banner_host": "mail.example.com", "ehlo_host": "mail.example.com"}, {}, {}, 25),
    ("ehlo-ptr-mismatch", {"ehlo_host": "localhost.localdomain"}, {}, {}, 25),
    ("ehlo-ptr-mismatch", {"banner_host": None, "ehlo_host": "mail.example.com"}, {}, {}, 25),
    ("no-ptr", {}, {"ptr_names": (), "fcrdns": False}, {}, 25),
    ("ptr-generic", {"banner_host": "192-0-2-7.pool.isp.example", "ehlo_host": "192-0-2-7.pool.isp.example",
                     "ip_literal": "[192.0.2.7]"}, {"ptr_names": ("192-0-2-7.pool.isp.example.",)}, {}, 25),
    ("ptr-generic", {"banner_host": "dyn-12.isp.example", "ehlo_host": "dyn-12.isp.example"},
     {"ptr_names": ("dyn-12.isp.example.",)}, {}, 25),
    ("no-fcrdns", {}, {"fcrdns": False}, {}, 25),
    ("no-starttls", {"starttls_offered": False, "extensions": ("PIPELINING",)}, {"tls": None}, {}, 25),
    ("no-starttls", {"starttls_offered": False}, {"tls": None}, {}, 587),
    ("no-starttls", {"starttls_offered": False, "esmtp": False, "extensions": ()}, {"tls": None}, {}, 25),
    ("tls-old-version", {}, {}, {"version": "TLSv1"}, 25),
    ("tls-old-version", {}, {}, {"version": "TLSv1.1"}, 25),
    ("tls-old-version", {}, {}, {"version": "SSLv3"}, 25),
    ("tls-weak-cipher", {}, {}, {"version": "TLSv1.2", "cipher": "DES-CBC3-SHA"}, 25),
    ("tls-weak-cipher", {}, {}, {"version": "TLSv1.2", "cipher": "ECDHE-RSA-RC4-SHA"}, 25),
    ("tls-weak-cipher", {}, {}, {"version": "TLSv1.2", "cipher": "ECDHE-RSA-NULL-SHA"}, 25),
    ("tls-weak-cipher", {}, {}, {"version": "TLSv1.2", "cipher": "ADH-AES256-GCM-SHA384"}, 25),
    ("tls-weak-cipher", {}, {}, {"version": "TLSv1.2", "cipher": "TLS_RSA_WITH_3DES_EDE_CBC_SHA"}, 25),
    ("cert-expired", {}, {}, {"not_after": "2026-05-01T00:00:00+00:00"}, 25),
    ("cert-expired", {}, {}, {"not_after": "2026-06-01T11:00:00Z"}, 25),  # an hour ago
    ("cert-expires-soon", {}, {}, {"not_after": "2026-06-06T00:00:00+00:00"}, 25),
    ("cert-self-signed", {}, {}, {"self_signed": True, "chain_verified": False}, 25),
    ("cert-untrusted", {}, {}, {"chain_verified": False, "verify_error": "unable to get local issuer certificate"},
     25),
    ("cert-name-mismatch", {}, {}, {"hostname_matches": False, "cert_sans": ("other.example.net",)}, 25),
    ("tls-handshake-failed", {}, {}, {"established": False, "version": None, "cipher": None,
                                      "error": "sslv3 alert handshake failure"}, 25),
    ("auth-without-tls", {}, {"auth_before_tls": ("PLAIN", "LOGIN")}, {}, 25),
    ("auth-without-tls", {}, {"auth_before_tls": ("LOGIN", "CRAM-MD5")}, {}, 587),
    ("auth-bypass", {}, {"auth_bypass_reply": reply("235 2.7.0 Authentication successful")}, {}, 587),
    ("vrfy-enabled", {}, {"vrfy_postmaster": reply("250 2.0.0 <postmaster@example.com>")}, {}, 25),
    ("vrfy-enabled", {}, {"vrfy_postmaster": reply("251 2.1.5 user not local; will forward")}, {}, 25),
    ("vrfy-enabled", {}, {"expn_postmaster": reply("250 2.1.5 Root <root@mx.example.com>")}, {}, 25),
    ("dnsbl-listed", {}, {"dnsbl": (DnsblResult("zen.spamhaus.org", True, ("127.0.0.2",), "127.0.0.2: SBL",
                                                "https://check.spamhaus.org/"),)}, {}, 25),
    ("dnsbl-unknown", {}, {"dnsbl": (DnsblResult("zen.spamhaus.org", None, ("127.255.255.254",),
                                                 "127.255.255.254: query refused"),)}, {}, 25),
]


@pytest.mark.parametrize(("code", "facts", "hygiene", "tls", "port"), TRIGGERS)
def test_each_code_is_triggered_alone(
    code: str, facts: dict[str, Any], hygiene: dict[str, Any], tls: dict[str, Any], port: int
) -> None:
    found = run(facts, hygiene, tls, port=port)
    assert codes(found) == [code]
    finding = found[0]
    assert finding.title and finding.detail
    assert finding.remediation == fix_for(code, "postfix")
    assert finding.remediation


def test_every_catalogue_code_has_a_trigger() -> None:
    assert {t[0] for t in TRIGGERS} == set(CATALOGUE)


@pytest.mark.parametrize(
    ("code", "severity"),
    [
        ("auth-bypass", Severity.CRITICAL),
        ("auth-without-tls", Severity.HIGH),
        ("dnsbl-listed", Severity.HIGH),
        ("no-starttls", Severity.MEDIUM),
        ("tls-old-version", Severity.MEDIUM),
        ("cert-self-signed", Severity.INFO),
        ("cert-name-mismatch", Severity.LOW),
        ("dnsbl-unknown", Severity.INFO),
    ],
)
def test_severities(code: str, severity: Severity) -> None:
    assert CATALOGUE[code].severity is severity


def test_banner_version_severity_depends_on_the_version() -> None:
    [with_version] = run({"banner": reply("220 mx.example.com ESMTP Exim 4.96 Thu, 01 Feb 2024")})
    assert with_version.severity is Severity.LOW
    assert "Exim 4.96" in with_version.title
    [name_only] = run({"banner": reply("220 mx.example.com ESMTP Postfix (Debian/GNU)")})
    assert name_only.severity is Severity.INFO
    assert "Postfix" in name_only.title


def test_no_starttls_only_on_25_and_587_and_only_after_talking_to_the_server() -> None:
    no_tls = {"starttls_offered": False}
    assert run(no_tls, {"tls": None}, port=465) == []
    assert run(no_tls, {"tls": None}, port=2525) == []
    assert run({"starttls_offered": False, "banner": None, "banner_host": None}, {"tls": None}) == []


def test_masked_banner_explains_missing_starttls() -> None:
    found = run(
        {"banner": reply("220 *****************************"), "banner_host": None, "starttls_offered": False},
        {"tls": None},
    )
    assert codes(found) == ["masked-banner", "no-starttls"]
    assert "firewall" in found[1].detail


def test_ptr_comparison_ignores_case_and_root_dot() -> None:
    assert run({"banner_host": "MX.Example.COM.", "ehlo_host": "mx.example.com"}) == []


def test_same_name_in_banner_and_ehlo_is_reported_once() -> None:
    found = run({"banner_host": "mail.example.com", "ehlo_host": "mail.example.com"})
    assert codes(found) == ["banner-ptr-mismatch"]


def test_certificate_expiry_uses_now() -> None:
    thirty_days: dict[str, Any] = {"not_after": (NOW + timedelta(days=30)).isoformat()}
    assert run(tls=thirty_days) == []
    assert codes(run(tls={"not_after": (NOW + timedelta(days=13)).isoformat()})) == ["cert-expires-soon"]
    later = hygiene_findings(
        HOST, 25, CLEAN_FACTS, replace(CLEAN, tls=replace(CLEAN_TLS, **thirty_days)), "postfix",
        now=NOW + timedelta(days=31),
    )
    assert codes(later) == ["cert-expired"]
    naive_now = hygiene_findings(HOST, 25, CLEAN_FACTS, CLEAN, "postfix", now=datetime(2027, 1, 1))
    assert codes(naive_now) == ["cert-expired"]


def test_unparsable_dates_are_not_findings() -> None:
    assert run(tls={"not_after": "next Tuesday"}) == []


def test_self_signed_is_not_also_untrusted() -> None:
    found = run(tls={"self_signed": True, "chain_verified": False, "hostname_matches": False})
    assert codes(found) == ["cert-self-signed", "cert-name-mismatch"]


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-AES256-GCM-SHA384", "TLS_CHACHA20_POLY1305_SHA256", "AES128-SHA"])
def test_strong_ciphers_are_fine(cipher: str) -> None:
    assert run(tls={"version": "TLSv1.2", "cipher": cipher}) == []


def test_auth_mechanisms_without_cleartext_passwords_are_fine() -> None:
    assert run(hygiene={"auth_before_tls": ("CRAM-MD5", "GSSAPI", "NTLM")}) == []


def test_auth_bypass_that_relays_says_any_password_relays() -> None:
    [finding] = run(
        hygiene={
            "auth_bypass_reply": reply("235 2.7.0 Authentication successful"),
            "auth_bypass_relay": reply("250 2.1.5 Ok"),
        }
    )
    assert finding.severity is Severity.CRITICAL
    assert "any password relays" in finding.title.lower()
    assert len(finding.evidence) == 2


def test_auth_bypass_without_relay_is_still_critical() -> None:
    [finding] = run(
        hygiene={
            "auth_bypass_reply": reply("235 2.7.0 Authentication successful"),
            "auth_bypass_relay": reply("554 5.7.1 <u@outside-a.test>: Relay access denied"),
        }
    )
    assert finding.severity is Severity.CRITICAL
    assert "Relay access denied" in finding.detail


@pytest.mark.parametrize(
    ("postmaster", "random"),
    [
        ("252 2.0.0 postmaster", "550 5.1.1 unknown"),  # 252 is not enumeration
        ("250 2.1.5 ok", "250 2.1.5 ok"),  # says yes to everything: reveals nothing
        ("250 2.1.5 ok", None),  # no comparison possible
        ("250 2.1.5 ok", "502 5.5.1 VRFY command is disabled"),
        ("502 5.5.1 VRFY command is disabled", "502 5.5.1 VRFY command is disabled"),
    ],
)
def test_vrfy_without_real_data_is_fine(postmaster: str, random: str | None) -> None:
    found = run(hygiene={"vrfy_postmaster": reply(postmaster), "vrfy_random": reply(random) if random else None})
    assert found == []


def test_a_server_that_says_yes_to_a_random_user_reveals_nothing() -> None:
    everything = reply("250 2.1.5 ok")
    found = run(hygiene={"vrfy_postmaster": everything, "vrfy_random": everything, "expn_postmaster": everything})
    assert found == []
    # the same EXPN answer from a server that refuses unknown users is enumeration
    refused = reply("550 5.1.1 unknown")
    found = run(hygiene={"vrfy_postmaster": everything, "vrfy_random": refused, "expn_postmaster": everything})
    assert [f.code for f in found] == ["vrfy-enabled"]


def test_one_dnsbl_finding_per_zone_with_delisting_help() -> None:
    found = run(
        hygiene={
            "dnsbl": (
                DnsblResult("zen.spamhaus.org", True, ("127.0.0.4",), "127.0.0.4: XBL"),
                DnsblResult("bl.spamcop.net", True, ("127.0.0.2",), "127.0.0.2: reported"),
                DnsblResult("psbl.surriel.com", False, (), "not listed"),
                DnsblResult("b.barracudacentral.org", None, (), "the lookup failed (timeout or server failure)"),
            )
        }
    )
    assert codes(found) == ["dnsbl-listed", "dnsbl-listed", "dnsbl-unknown"]
    assert "check.spamhaus.org" in found[0].detail
    assert found[0].title == "Listed on zen.spamhaus.org"
    assert "registered" in found[2].detail  # Barracuda's note about resolver registration


def test_remediation_follows_the_family() -> None:
    banner = {"banner": reply("220 mx.example.com ESMTP Postfix (3.7.11)")}
    [postfix] = run(banner, family="postfix")
    [unknown] = run(banner, family="unknown")
    assert postfix.remediation is not None and "smtpd_banner" in postfix.remediation
    assert unknown.remediation == fix_for("banner-version", "generic")


def test_with_remediation_attaches_fixes_to_other_findings() -> None:
    verdict_finding = Finding("relay-domain", Severity.INFO, "Relays for a.test only", "…")
    [fixed] = with_remediation([verdict_finding], "exchange")
    assert fixed.remediation is not None and "Get-AcceptedDomain" in fixed.remediation
    other = Finding("catch-all", Severity.INFO, "catch-all", "…", remediation="keep")
    assert with_remediation([other], "postfix")[0].remediation == "keep"


def test_docs_table_lists_every_code_with_its_severity() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "findings.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (\w+)", docs, re.MULTILINE))
    for code, spec in CATALOGUE.items():
        assert rows.get(code) == spec.severity.value, code
