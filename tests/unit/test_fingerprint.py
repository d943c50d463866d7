"""Fingerprint tables: real greetings, EHLO keyword lists and reply texts per MTA family.

The strings are the ones each MTA sends by default (from its source or documentation, and the
integration-lab Postfix/Exim), with host names and dates replaced.
"""

from __future__ import annotations

import pytest

from relaycheck.fingerprint import SIGNATURES, Source, banner_disclosure, fingerprint, is_masked_banner
from relaycheck.model import Reply
from relaycheck.smtp.wire import parse_enhanced


def reply(text: str) -> Reply:
    code, _, rest = text.partition(" ")
    return Reply(int(code), (rest,), parse_enhanced(int(code), rest))


POSTFIX_EHLO = ("PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
                "SMTPUTF8", "CHUNKING")
EXCHANGE_EHLO = ("SIZE 37748736", "PIPELINING", "DSN", "ENHANCEDSTATUSCODES", "STARTTLS", "X-ANONYMOUSTLS",
                 "AUTH NTLM", "X-EXPS GSSAPI NTLM", "8BITMIME", "BINARYMIME", "CHUNKING", "XRDST")
SENDMAIL_EHLO = ("ENHANCEDSTATUSCODES", "PIPELINING", "8BITMIME", "SIZE", "DSN", "ETRN", "AUTH DIGEST-MD5 CRAM-MD5",
                 "STARTTLS", "DELIVERBY", "HELP")
OPENSMTPD_EHLO = ("8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 36700160", "DSN", "HELP")
BARE = "220 mx.example.com ESMTP"


@pytest.mark.parametrize(
    ("banner", "ehlo", "replies", "family", "version"),
    [
        # --- Postfix
        ("220 mx.example.com ESMTP Postfix (Debian/GNU)", (), (), "postfix", None),
        ("220 mail.example.org ESMTP Postfix (Ubuntu)", (), (), "postfix", None),
        ("220 mx.example.com ESMTP Postfix (3.7.11)", (), (), "postfix", "3.7.11"),
        (BARE, (), ("554 5.7.1 <u@outside-a.test>: Relay access denied",), "postfix", None),
        (BARE, (), ("454 4.7.1 <u@outside-a.test>: Relay access denied",), "postfix", None),  # defer_unauth
        (BARE, POSTFIX_EHLO, ("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local "
                              "recipient table",), "postfix", None),
        (None, POSTFIX_EHLO, (), "postfix", None),  # the keyword order alone
        (BARE, (), ("502 5.5.1 VRFY command is disabled",), "postfix", None),
        (BARE, (), ("502 5.5.2 Error: command not recognized",), "postfix", None),  # EXPN, on a relay
        # --- Exim
        ("220 mx.example.com ESMTP Exim 4.96 Thu, 01 Feb 2024 10:00:00 +0000", (), (), "exim", "4.96"),
        ("220 mail.example.org ESMTP Exim 4.97.1 Ubuntu Mon, 05 Feb 2024 09:00:00 +0100", (), (), "exim", "4.97.1"),
        (BARE, (), ("550 relay not permitted",), "exim", None),
        (BARE, ("SIZE 52428800", "8BITMIME", "PIPELINING", "X_PIPE_CONNECT", "PRDR", "HELP"), (), "exim", None),
        (BARE, ("SIZE 52428800", "8BITMIME", "PIPELINING", "PIPE_CONNECT", "CHUNKING", "HELP"), (), "exim", None),
        # --- Microsoft Exchange
        ("220 EX01.contoso.com Microsoft ESMTP MAIL Service ready at Thu, 1 Feb 2024 10:00:00 +0000", (), (),
         "exchange", None),
        ("220 mail.example.com Microsoft ESMTP MAIL Service, Version: 6.0.3790.4675 ready at  Thu, 1 Feb 2024", (),
         (), "exchange", "6.0.3790.4675"),
        (BARE, EXCHANGE_EHLO, (), "exchange", None),
        (BARE, ("SIZE", "PIPELINING", "XEXCH50"), (), "exchange", None),
        (BARE, (), ("550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",), "exchange", None),
        (BARE, (), ("550 5.7.1 Unable to relay",), "exchange", None),
        # --- Sendmail
        ("220 mail.example.com ESMTP Sendmail 8.17.1.9/8.17.1.9; Thu, 1 Feb 2024 10:00:00 +0100", (), (),
         "sendmail", "8.17.1.9"),
        ("220 host.example.net ESMTP Sendmail 8.14.4/8.14.4/Debian-8; Mon, 5 Feb 2024", (), (), "sendmail", "8.14.4"),
        (BARE, (), ("550 5.7.1 <u@outside-a.test>... Relaying denied",), "sendmail", None),
        (BARE, (), ("550 5.7.1 <u@outside-a.test>... Relaying denied. Proper authentication required.",),
         "sendmail", None),
        (BARE, SENDMAIL_EHLO, (), "sendmail", None),
        (BARE, (), ("252 2.5.2 Cannot VRFY user; try RCPT to attempt delivery (or try finger)",), "sendmail", None),
        # --- OpenSMTPD
        ("220 mx.example.com ESMTP OpenSMTPD", (), (), "opensmtpd", None),
        (BARE, OPENSMTPD_EHLO, ("250 mx.example.com Hello client.example [192.0.2.9], pleased to meet you",
                                "550 Invalid recipient: <u@outside-a.test>"), "opensmtpd", None),
        (BARE, (), ("250 2.1.5 Destination address valid: Recipient ok",), "opensmtpd", None),
        # --- qmail
        (BARE, (), ("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",), "qmail", None),
        ("220 mail.example.com ESMTP qmail", (), (), "qmail", None),
        # --- Haraka
        ("220 mx.example.com ESMTP Haraka 2.8.28 ready", (), (), "haraka", "2.8.28"),
        ("220 3f2a1b0c9d8e ESMTP Haraka/3.1.5 ready (C9DF66)", (), (), "haraka", "3.1.5"),
        (BARE, (), ("250 mx.example.com Hello client [192.0.2.9], Haraka is at your service.",), "haraka", None),
        (BARE, (), ("252 Just try sending a mail and we'll see how it turns out...",), "haraka", None),
    ],
)
def test_family_and_version(
    banner: str | None, ehlo: tuple[str, ...], replies: tuple[str, ...], family: str, version: str | None
) -> None:
    result = fingerprint(reply(banner) if banner else None, ehlo, [reply(r) for r in replies])
    assert (result.family, result.version) == (family, version)
    assert result.evidence, "a recognised family must say why"


@pytest.mark.parametrize(
    ("banner", "replies"),
    [
        (None, ()),
        ("220 ESMTP ready", ()),
        (BARE, ()),  # qmail's bare greeting, but also a hardened Postfix: not enough alone
        ("220 exim.example.org ESMTP", ()),  # product names inside host names do not count
        ("220 mx.example.com ESMTP", ("250 mx.example.com Hello x [192.0.2.9], pleased to meet you",)),  # 2 MTAs
        ("220 mx.example.com ESMTP", ("250 2.1.5 Ok", "221 2.0.0 Bye")),
    ],
)
def test_unknown(banner: str | None, replies: tuple[str, ...]) -> None:
    result = fingerprint(reply(banner) if banner else None, (), [reply(r) for r in replies])
    assert result.family == "unknown"
    assert result.version is None


def test_product_names_in_host_names_do_not_mislead() -> None:
    assert fingerprint(reply("220 haraka.example.com ESMTP Postfix"), (), []).family == "postfix"
    assert fingerprint(reply("220 qmail.example.com ESMTP Exim 4.96"), (), []).family == "exim"


@pytest.mark.parametrize(
    "banner",
    [
        "220 ****************************************",
        "220 ******************************2***0*0****0**0*2**",  # Cisco keeps the 2s and 0s
        "220 ***************************************** ***********",
    ],
)
def test_masked_banner_is_unknown_with_evidence(banner: str) -> None:
    assert is_masked_banner(reply(banner))
    result = fingerprint(reply(banner), (), [])
    assert result.family == "unknown"
    assert any("masked" in e for e in result.evidence)


def test_masked_banner_still_lets_replies_identify_the_mta_behind() -> None:
    result = fingerprint(reply("220 *******************"), (), [reply("554 5.7.1 <u@x.test>: Relay access denied")])
    assert result.family == "postfix"
    assert any("masked" in e for e in result.evidence)


@pytest.mark.parametrize("banner", ["220 mx.example.com ESMTP", "220 ready", "220 2.0.0 ready *"])
def test_ordinary_banners_are_not_masked(banner: str) -> None:
    assert not is_masked_banner(reply(banner))


def test_stronger_evidence_wins_over_a_conflicting_hint() -> None:
    result = fingerprint(
        reply("220 mx.example.com ESMTP Postfix"), (), [reply("550 5.7.1 Unable to relay")]
    )  # e.g. Postfix in front of Exchange: the greeting decides
    assert result.family == "postfix"


def test_evidence_names_the_matching_text() -> None:
    result = fingerprint(reply("220 mx.example.com ESMTP Exim 4.96 Thu, 01 Feb 2024"), (), [])
    assert any("Exim 4.96" in e and e.startswith("banner:") for e in result.evidence)
    assert len(result.evidence) == 1  # one banner clue per family, not one per pattern


@pytest.mark.parametrize(
    ("banner", "product", "version"),
    [
        ("220 mx.example.com ESMTP Postfix (Debian/GNU)", "Postfix", None),
        ("220 mx.example.com ESMTP Exim 4.96 Thu, 01 Feb 2024", "Exim", "4.96"),
        ("220 h.example.com ESMTP Sendmail 8.17.1.9/8.17.1.9; Thu, 1 Feb 2024", "Sendmail", "8.17.1.9"),
        ("220 mx.example.com ESMTP Haraka 2.8.28 ready", "Haraka", "2.8.28"),
        ("220 EX01.contoso.com Microsoft ESMTP MAIL Service ready at Thu", "Microsoft Exchange", None),
        ("220 mx.example.com ESMTP OpenSMTPD", "OpenSMTPD", None),
    ],
)
def test_banner_disclosure(banner: str, product: str, version: str | None) -> None:
    disclosed = banner_disclosure(reply(banner))
    assert disclosed is not None
    assert (disclosed.product, disclosed.version) == (product, version)


@pytest.mark.parametrize("banner", [BARE, "220 ****************", "220 ESMTP ready"])
def test_no_disclosure(banner: str) -> None:
    assert banner_disclosure(reply(banner)) is None
    assert banner_disclosure(None) is None


def test_signature_table_is_well_formed() -> None:
    families = {"postfix", "exim", "exchange", "sendmail", "opensmtpd", "qmail", "haraka"}
    assert {s.family for s in SIGNATURES} == families
    for s in SIGNATURES:
        assert s.weight > 0
        assert s.regex.pattern == s.pattern  # compiles
        if "(?P<version>" in s.pattern:
            assert s.source is Source.BANNER
