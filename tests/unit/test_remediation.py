"""Remediation texts: every finding has a fix, the open relay has one per MTA family."""

from __future__ import annotations

import pytest

from relaycheck.findings import registry
from relaycheck.findings.fixes import FAMILIES, blocks, codes_with_texts, load_texts
from relaycheck.findings.registry import Source, fix_for

CATALOGUE = {c.code: c for c in registry.of_source(Source.HYGIENE)}


def test_every_finding_code_has_a_generic_text() -> None:
    for code in CATALOGUE:
        text = fix_for(code, "unknown")
        assert text and text.strip(), code


@pytest.mark.parametrize(
    ("family", "must_mention"),
    [
        ("postfix", ("mynetworks = 127.0.0.0/8 [::1]/128", "smtpd_relay_restrictions = permit_mynetworks, "
                     "permit_sasl_authenticated, reject_unauth_destination", "postconf -n | grep -E "
                     "'mynetworks|relay'", "postfix reload")),
        ("exim", ("relay_from_hosts", "dc_relay_nets", "acl_check_rcpt", "require verify", "!+local_domains")),
        ("exchange", ('Get-ReceiveConnector | Get-ADPermission -User "NT Authority\\Anonymous Logon" | '
                      'Where-Object {$_.ExtendedRights -like "ms-Exch-SMTP-Accept-Any-Recipient"}',
                      "RemoteIPRanges", "Remove-ADPermission")),
        ("sendmail", ("promiscuous_relay", "/etc/mail/access", "makemap")),
        ("opensmtpd", ("match from local for any", "match from any for any")),
        ("qmail", ("rcpthosts", "RELAYCLIENT", "tcprules")),
        ("haraka", ("relay_acl_allow", "acl=true")),
    ],
)
def test_open_relay_fix_per_family(family: str, must_mention: tuple[str, ...]) -> None:
    text = fix_for("open-relay", family)
    assert text is not None and text != fix_for("open-relay", "unknown")
    for words in must_mention:
        assert words in text, words


def test_every_family_has_an_open_relay_text() -> None:
    assert set(load_texts()["open-relay"].by_family) == FAMILIES


def test_unknown_family_and_code() -> None:
    generic = fix_for("open-relay", "generic")
    assert generic is not None
    assert fix_for("open-relay", "unknown") == generic
    assert fix_for("open-relay", "zmailer") == generic
    assert fix_for("open-relay", "POSTFIX") == fix_for("open-relay", "postfix")
    assert fix_for("no-such-finding", "postfix") is None


def test_see_borrows_family_texts_but_keeps_its_generic() -> None:
    assert fix_for("ehlo-ptr-mismatch", "postfix") == fix_for("banner-ptr-mismatch", "postfix")
    assert fix_for("ehlo-ptr-mismatch", "unknown") != fix_for("banner-ptr-mismatch", "unknown")
    assert fix_for("cert-expires-soon", "exchange") == fix_for("cert-expired", "exchange")


@pytest.mark.parametrize(
    ("code", "family", "words"),
    [
        ("banner-version", "postfix", "smtpd_banner = $myhostname ESMTP"),
        ("banner-version", "exim", "smtp_banner"),
        ("banner-version", "exchange", "Set-ReceiveConnector"),
        ("auth-without-tls", "postfix", "smtpd_tls_auth_only = yes"),
        ("vrfy-enabled", "postfix", "disable_vrfy_command = yes"),
        ("masked-banner", "unknown", "no inspect esmtp"),
        ("dnsbl-unknown", "unknown", "127.255.255.254"),
    ],
)
def test_specific_advice(code: str, family: str, words: str) -> None:
    text = fix_for(code, family)
    assert text is not None and words in text


def test_texts_follow_the_layout_convention() -> None:
    for remedy in load_texts().values():
        for text in (remedy.generic, *remedy.by_family.values()):
            assert "\t" not in text
            assert not text.startswith(" "), f"{remedy.code}: starts with a verbatim line"
            assert blocks(text), remedy.code


def test_blocks_split_prose_and_verbatim_lines() -> None:
    text = "Do this:\n\n    postconf -n\n    postfix reload\n\nThen:\n1. one\n2. two"
    assert [(b.verbatim, b.text) for b in blocks(text)] == [
        (False, "Do this:"),
        (True, "postconf -n\npostfix reload"),
        (False, "Then:"),
        (False, "1. one"),
        (False, "2. two"),
    ]


def test_codes_with_texts_cover_the_catalogue_and_the_verdict() -> None:
    with_fix = codes_with_texts() | {c for c, entry in registry.codes().items() if entry.fix}
    assert set(CATALOGUE) | {"open-relay", "relay-domain"} <= with_fix
