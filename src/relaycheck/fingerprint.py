"""PURE: which MTA family answers, from its banner, EHLO keywords and reply texts.

The knowledge lives in ``SIGNATURES``, a table of (family, where to look, pattern, weight). Each
matching signature adds its weight to its family; the family with the highest total wins if it
reaches ``MIN_SCORE``. Weights say how specific a wording is: a product name in the banner is
decisive, a reply wording one MTA alone uses is strong, an EHLO keyword or the order of keywords
is a hint. Sources of the strings: each MTA's source code or documented stock replies (Postfix
smtpd, Exim's default ACLs, Exchange's receive connectors, Sendmail's srvrsmtp, OpenSMTPD's
smtp_session/lka_session, qmail-smtpd, Haraka's connection.js), and the integration-lab MTAs.

Where to look:
- ``banner``: the text of the 220 greeting (without the code);
- ``ehlo``: each EHLO keyword line, e.g. ``SIZE 10240000``, ``X-ANONYMOUSTLS``;
- ``ehlo-sequence``: the keyword names in the order advertised, joined by spaces: the order is
  fixed in each MTA's source, so it separates MTAs that advertise the same set;
- ``reply``: every other reply, as ``"code text"``. Pass the EHLO reply itself among the
  replies: its greeting line (``Haraka is at your service``, ``pleased to meet you``) counts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from relaycheck.model import Fingerprint, Reply

UNKNOWN = "unknown"

# Display names, for titles and report text ("The banner discloses Exim 4.96").
FAMILY_NAMES: dict[str, str] = {
    "postfix": "Postfix",
    "exim": "Exim",
    "exchange": "Microsoft Exchange",
    "sendmail": "Sendmail",
    "opensmtpd": "OpenSMTPD",
    "qmail": "qmail",
    "haraka": "Haraka",
    UNKNOWN: "an unidentified MTA",
}


class Source(StrEnum):
    BANNER = "banner"
    EHLO = "ehlo"
    EHLO_SEQUENCE = "ehlo-sequence"
    REPLY = "reply"


@dataclass(frozen=True)
class Signature:
    """One clue: ``pattern`` searched (case-insensitively) in ``source``.

    A named group ``version`` in the pattern captures the software version. ``names_software``
    marks banner patterns that spell out the product name: that is what the banner-version
    finding reports (a bare ``220 host ESMTP`` is a clue for qmail, not a disclosure).
    """

    family: str
    source: Source
    pattern: str
    weight: int
    what: str  # a few words for the evidence line
    names_software: bool = False

    @property
    def regex(self) -> re.Pattern[str]:
        return _compiled(self.pattern)


@functools.cache  # a fixed table: each pattern compiled once
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


# Weights: 10 = product name (decisive), 6–8 = wording only this MTA uses, 3–5 = keyword or
# idiom shared with few others, 1–2 = weak hint that needs company.
SIGNATURES: tuple[Signature, ...] = (
    # --- Postfix: smtpd_banner = "$myhostname ESMTP $mail_name" (+ "(Debian/GNU)", "(Ubuntu)" or
    # "($mail_version)" on some installs).
    Signature(
        "postfix",
        Source.BANNER,
        r"\bESMTP Postfix\b(?: \((?P<version>\d+\.\d+(?:\.\d+)*)\))?",
        10,
        "Postfix banner",
        names_software=True,
    ),
    # check_relay_domains / reject_unauth_destination: "554 5.7.1 <u@ext>: Relay access denied",
    # and "454 4.7.1 … Relay access denied" from the stock defer_unauth_destination.
    Signature("postfix", Source.REPLY, r"^[45]\d\d [45]\.7\.1 .*Relay access denied", 8, "Postfix relay refusal"),
    Signature("postfix", Source.REPLY, r"User unknown in (local|virtual|relay) recipient table", 8, "Postfix lookup"),
    Signature("postfix", Source.REPLY, r": (Recipient|Sender|Client host|Helo command) (address )?rejected: ", 5,
              "Postfix restriction wording"),
    Signature("postfix", Source.REPLY, r"^502 5\.5\.1 VRFY command is disabled", 6, "Postfix disable_vrfy_command"),
    Signature("postfix", Source.REPLY, r"Error: SMTP protocol synchronization", 6, "Postfix pipelining check"),
    # smtpd.c's reply to a command it does not have, EXPN among them (the check asks EXPN)
    Signature("postfix", Source.REPLY, r"^50[02] 5\.5\.2 Error: command not recognized", 6, "Postfix unknown command"),
    # smtpd.c advertises in this order: PIPELINING SIZE [VRFY] [ETRN] [STARTTLS] [AUTH] …
    # ENHANCEDSTATUSCODES 8BITMIME [DSN] [SMTPUTF8] [CHUNKING].
    Signature(
        "postfix",
        Source.EHLO_SEQUENCE,
        r"^PIPELINING SIZE\b.*\bENHANCEDSTATUSCODES 8BITMIME( DSN)?( SMTPUTF8)?( CHUNKING)?$",
        4,
        "Postfix EHLO keyword order",
    ),
    # --- Exim: smtp_banner = "$smtp_active_hostname ESMTP Exim $version_number $tod_full"
    # (Debian/Ubuntu builds add the distribution: "Exim 4.96 Ubuntu Thu, …").
    Signature(
        "exim",
        Source.BANNER,
        r"\bESMTP Exim (?P<version>\d+\.\d+(?:\.\d+)*(?:[-_][0-9A-Za-z]+)?)?",
        10,
        "Exim banner",
        names_software=True,
    ),
    Signature("exim", Source.BANNER, r"(?<![\w.-])Exim(?![\w.-])", 8, "Exim in the banner", names_software=True),
    # The default configuration's acl_check_rcpt: "require message = relay not permitted".
    Signature("exim", Source.REPLY, r"^5\d\d relay not permitted", 8, "Exim default relay ACL"),
    Signature("exim", Source.REPLY, r"^5\d\d Administrative prohibition", 5, "Exim ACL wording"),
    Signature("exim", Source.REPLY, r"^5\d\d Unrouteable address", 5, "Exim routing failure"),
    # Exim 4.92/4.93 experimental X_PIPE_CONNECT; 4.94+ advertises PIPECONNECT (seen from 4.96
    # in the lab), which its documentation and configuration call PIPE_CONNECT.
    Signature("exim", Source.EHLO, r"^X_PIPE_CONNECT\b", 6, "Exim experimental early pipelining"),
    Signature("exim", Source.EHLO, r"^PIPE_?CONNECT\b", 5, "Exim early pipelining"),
    Signature("exim", Source.EHLO, r"^PRDR$", 3, "PRDR (chiefly Exim)"),
    # --- Microsoft Exchange (and the IIS SMTP service Exchange 2003 ran on):
    # "220 host Microsoft ESMTP MAIL Service ready at Thu, …",
    # "220 host Microsoft ESMTP MAIL Service, Version: 6.0.3790.4675 ready at …".
    Signature(
        "exchange",
        Source.BANNER,
        r"\bMicrosoft ESMTP MAIL Service(?:, Version: (?P<version>\d+(?:\.\d+)+))?",
        10,
        "Exchange / IIS SMTP banner",
        names_software=True,
    ),
    Signature("exchange", Source.BANNER, r"\bMicrosoft Exchange\b", 10, "Exchange banner", names_software=True),
    Signature("exchange", Source.REPLY, r"^550 5\.7\.54 SMTP; Unable to relay", 8, "Exchange 2013+ relay refusal"),
    Signature("exchange", Source.REPLY, r"^550 5\.7\.1 Unable to relay", 7, "Exchange relay refusal"),
    Signature("exchange", Source.REPLY, r"^530 5\.7\.1 Client was not authenticated", 7, "Exchange auth refusal"),
    Signature("exchange", Source.EHLO, r"^X-ANONYMOUSTLS$", 6, "Exchange X-ANONYMOUSTLS"),
    Signature("exchange", Source.EHLO, r"^XEXCH50$", 6, "Exchange XEXCH50"),
    Signature("exchange", Source.EHLO, r"^X-EXPS\b", 5, "Exchange X-EXPS"),
    Signature("exchange", Source.EHLO, r"^XRDST$", 5, "Exchange XRDST"),
    Signature("exchange", Source.EHLO, r"^XSHADOW(REQUEST)?$", 5, "Exchange shadow redundancy"),
    # --- Sendmail: "220 $j ESMTP Sendmail $v/$Z; $b".
    Signature(
        "sendmail",
        Source.BANNER,
        r"\bSendmail (?P<version>\d+\.\d+(?:\.\d+)*)(?:/[\w.]+)?",
        10,
        "Sendmail banner",
        names_software=True,
    ),
    Signature(
        "sendmail", Source.BANNER, r"(?<![\w.-])Sendmail(?![\w.-])", 8, "Sendmail in the banner", names_software=True
    ),
    # "550 5.7.1 <u@ext>... Relaying denied" (+ ". Proper authentication required.", ". IP name
    # lookup failed …"): the "<addr>... text" idiom is Sendmail's own.
    Signature("sendmail", Source.REPLY, r"\.\.\. Relaying denied", 8, "Sendmail relay refusal"),
    Signature("sendmail", Source.REPLY, r"^5\d\d \d\.\d\.\d <[^>]*>\.\.\. ", 4, "Sendmail '<addr>...' idiom"),
    Signature("sendmail", Source.REPLY, r"Cannot VRFY user; try RCPT to attempt delivery", 7, "Sendmail VRFY reply"),
    Signature("sendmail", Source.REPLY, r"pleased to meet you", 2, "EHLO 'pleased to meet you'"),
    Signature("sendmail", Source.EHLO, r"^DELIVERBY\b", 5, "Sendmail DELIVERBY"),
    Signature("sendmail", Source.EHLO, r"^(VERB|ONEX)$", 3, "Sendmail VERB/ONEX"),
    Signature(
        "sendmail",
        Source.EHLO_SEQUENCE,
        r"^ENHANCEDSTATUSCODES PIPELINING 8BITMIME SIZE\b",
        3,
        "Sendmail EHLO keyword order",
    ),
    # --- OpenSMTPD: SMTPD_BANNER "220 %s ESMTP OpenSMTPD"; an unmatched RCPT gets lka's
    # "550 Invalid recipient" followed by ": <addr>"; accepted ones "250 2.1.5 Destination address
    # valid: Recipient ok".
    Signature("opensmtpd", Source.BANNER, r"\bESMTP OpenSMTPD\b", 10, "OpenSMTPD banner", names_software=True),
    Signature("opensmtpd", Source.REPLY, r"^550 Invalid recipient: <", 3, "OpenSMTPD unmatched recipient"),
    Signature("opensmtpd", Source.REPLY, r"Destination address valid: Recipient ok", 6, "OpenSMTPD RCPT reply"),
    Signature("opensmtpd", Source.REPLY, r"^500 5\.5\.1 Invalid command: ", 4, "OpenSMTPD command error"),
    Signature("opensmtpd", Source.REPLY, r"pleased to meet you", 2, "EHLO 'pleased to meet you'"),
    Signature(
        "opensmtpd",
        Source.EHLO_SEQUENCE,
        r"^8BITMIME ENHANCEDSTATUSCODES SIZE\b",
        3,
        "OpenSMTPD EHLO keyword order",
    ),
    # --- qmail: "220 $me ESMTP" (no product name by design); rcpthosts refusal with the
    # trailing "(#5.7.1)" status idiom.
    Signature("qmail", Source.BANNER, r"(?<![\w.-])qmail(?![\w.-])", 10, "qmail in the banner", names_software=True),
    Signature("qmail", Source.REPLY, r"list of allowed rcpthosts", 8, "qmail rcpthosts refusal"),
    Signature("qmail", Source.REPLY, r"\(#\d\.\d\.\d+\)$", 4, "qmail '(#x.y.z)' status idiom"),
    Signature("qmail", Source.BANNER, r"^\S+ ESMTP$", 1, "bare 'host ESMTP' banner"),
    # --- Haraka: "220 host ESMTP Haraka 2.8.28 ready", newer "ESMTP Haraka/3.1.5 ready (UUID)";
    # EHLO "Hello …, Haraka is at your service."; VRFY/NOOP "Just try sending a mail and we'll see
    # how it turns out..."; QUIT "… Have a jolly good day."
    Signature(
        "haraka",
        Source.BANNER,
        r"(?<![\w.-])Haraka(?![\w.-])(?:[ /](?P<version>\d+(?:\.\d+)+))?",
        10,
        "Haraka banner",
        names_software=True,
    ),
    Signature("haraka", Source.REPLY, r"Haraka is at your service", 8, "Haraka EHLO greeting"),
    Signature("haraka", Source.REPLY, r"Just try sending a mail and we'll see how it turns out", 7, "Haraka VRFY"),
    Signature("haraka", Source.REPLY, r"Have a jolly good day", 6, "Haraka QUIT"),
)

MIN_SCORE = 4  # below this, nothing but weak hints: say "unknown" rather than guess

# SMTP-inspecting firewalls (Cisco PIX "fixup smtp" / ASA ESMTP inspection and similar) replace
# every banner character except "2", "0" and spaces with "*": "220 ****************2**0*0**".
_MASK = re.compile(r"^[\s*20]*\*{4,}[\s*20]*$")


def is_masked_banner(banner: Reply | None) -> bool:
    """The greeting was rewritten to asterisks by a middlebox."""
    return banner is not None and bool(banner.lines) and bool(_MASK.match(banner.text))


@dataclass(frozen=True)
class Match:
    signature: Signature
    text: str  # the banner/keyword/reply text that matched
    version: str | None


def matches(banner: Reply | None, ehlo_keywords: Sequence[str], replies: Sequence[Reply]) -> list[Match]:
    """Every signature that matches, in table order (each with the first text it matched)."""
    texts: dict[Source, Iterable[str]] = {
        Source.BANNER: [banner.text] if banner is not None and not is_masked_banner(banner) else [],
        Source.EHLO: [k.strip() for k in ehlo_keywords if k.strip()],
        Source.EHLO_SEQUENCE: [" ".join(k.split()[0].upper() for k in ehlo_keywords if k.strip())],
        # A battery repeats the same few replies dozens of times (the same objects: the parser
        # interns them): look at each text once.
        Source.REPLY: dict.fromkeys(str(r) for r in {id(r): r for r in replies}.values()),
    }
    first: dict[int, tuple[str, str | None]] = {}  # signature index -> (text, version) of its first hit
    for source, items in texts.items():
        for text in items:
            key = _ADDRESS.sub("<>", text) if source is Source.REPLY else text
            for index, version in _hits(source, key):
                first.setdefault(index, (text, version))
    found: list[Match] = []
    named: set[str] = set()  # families already named by a banner signature: one is enough
    for index in sorted(first):
        signature = SIGNATURES[index]
        if signature.source is Source.BANNER:
            if signature.family in named:
                continue
            named.add(signature.family)
        text, version = first[index]
        found.append(Match(signature, text, version))
    return found


# The address a reply echoes ("<u%ext@[192.0.2.7]>: Recipient address rejected") differs from
# server to server; no signature looks inside it (the Sendmail and OpenSMTPD ones need only the
# brackets), so the memo is keyed on the text with it emptied, and a scan matches each wording once.
_ADDRESS = re.compile(r"<[^<>]*>")

_BY_SOURCE: dict[Source, tuple[tuple[int, re.Pattern[str]], ...]] = {
    source: tuple((i, s.regex) for i, s in enumerate(SIGNATURES) if s.source is source) for source in Source
}


@functools.lru_cache(maxsize=4096)
def _hits(source: Source, text: str) -> tuple[tuple[int, str | None], ...]:
    """The signatures of ``source`` that match ``text``, with the version each captured.

    Memoised: a bulk scan meets the same refusal wordings on thousands of servers, and each text
    would otherwise be searched with every pattern of the table again (the cache is bounded).
    """
    return tuple(
        (index, hit.groupdict().get("version")) for index, regex in _BY_SOURCE[source] if (hit := regex.search(text))
    )


def fingerprint(banner: Reply | None, ehlo_keywords: Sequence[str], replies: Sequence[Reply]) -> Fingerprint:
    """The MTA family (and version when shown) behind a target.

    A masked banner is reported in the evidence; the family then comes from the other clues
    (reply wordings pass through the middlebox), or is ``unknown`` when there are none.
    """
    found = matches(banner, ehlo_keywords, replies)
    masked_note = (
        [f"banner masked ({_short(banner.text)!r}): an SMTP-inspecting firewall rewrote it"]
        if banner is not None and is_masked_banner(banner)
        else []
    )
    scores: dict[str, int] = {}
    for m in found:
        scores[m.signature.family] = scores.get(m.signature.family, 0) + m.signature.weight
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    if not ranked or ranked[0][1] < MIN_SCORE or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        hints = [_evidence(m) for m in found]
        return Fingerprint(UNKNOWN, None, tuple(masked_note + hints))
    family = ranked[0][0]
    winning = [m for m in found if m.signature.family == family]
    versions = [m.version for m in winning if m.version]
    return Fingerprint(family, versions[0] if versions else None, tuple(masked_note + [_evidence(m) for m in winning]))


@dataclass(frozen=True)
class Disclosure:
    """What a banner gives away: the product, and its version when shown."""

    family: str
    product: str
    version: str | None
    banner_text: str


def banner_disclosure(banner: Reply | None) -> Disclosure | None:
    """The software named in the greeting, if any (the ``banner-version`` finding)."""
    if banner is None or is_masked_banner(banner):
        return None
    best: Disclosure | None = None
    for m in matches(banner, (), ()):
        if not m.signature.names_software:
            continue
        found = Disclosure(m.signature.family, FAMILY_NAMES[m.signature.family], m.version, banner.text)
        if best is None or (found.version and not best.version):
            best = found
    return best


def _evidence(m: Match) -> str:
    return f"{m.signature.source}: {_short(m.text)!r} ({m.signature.what})"


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
