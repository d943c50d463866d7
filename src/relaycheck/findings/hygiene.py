"""PURE: hygiene facts about one target -> findings (banner, reverse DNS, TLS, AUTH, VRFY, DNSBL).

Every code this module emits is in the registry (``codes.toml``, source ``hygiene``), with its
severity and title. ``CHECKS`` is the list of
small named rules, one per concern; each returns the findings it sees. Every finding carries the
fix for the detected MTA family (``fixes.fix_for``). The relay verdict's own findings
(catch-all, relay-domain, submission without AUTH…) are verdict.py's business, not this module's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from relaycheck.dnsbl import zone_info
from relaycheck.findings import registry
from relaycheck.fingerprint import banner_disclosure, is_masked_banner
from relaycheck.model import Finding, HygieneFacts, Reply, SessionFacts, Severity

# Protocol names as Python's ssl module reports them (SSLSocket.version()).
OLD_TLS_VERSIONS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.0", "TLSv1.1"})
# OpenSSL / IANA cipher-suite names -> why they are weak.
WEAK_CIPHERS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), why)
    for pattern, why in (
        (r"NULL", "no encryption (NULL)"),
        (r"EXP(ORT)?[-_]", "export-grade key length"),
        (r"(^|[-_])(ADH|AECDH)[-_]|_anon_", "anonymous key exchange: no server authentication"),
        (r"RC4", "RC4 is broken (RFC 7465)"),
        (r"(^|[-_])(DES-CBC3|3DES|DES[-_]CBC)([-_]|$)|_DES_|DES-CBC-", "DES/3DES: 64-bit blocks (Sweet32)"),
        (r"(^|[-_])MD5$", "MD5 message authentication"),
    )
)
# SASL mechanisms that carry the password (or a bearer token) itself.
CLEARTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"})
EXPIRY_WARNING = timedelta(days=14)
# Labels (or label prefixes) ISPs give dynamic and residential addresses.
GENERIC_PTR_WORDS = re.compile(
    r"(^|[.-])(dyn|dynamic|dhcp|pool|dsl|adsl|vdsl|cable|ppp|pppoe|dialup|dial-up|broadband|residential)(?=[.\d-])",
    re.IGNORECASE,
)
SUBMISSION_AND_MX_PORTS = frozenset({25, 587})  # 465 is implicit TLS: nothing to offer


@dataclass(frozen=True)
class Context:
    target_host: str
    port: int
    facts: SessionFacts
    hygiene: HygieneFacts
    family: str
    now: datetime

    def finding(
        self,
        code: str,
        detail: str,
        evidence: Iterable[str] = (),
        *,
        title: str | None = None,
        severity: Severity | None = None,
    ) -> Finding:
        return registry.finding(code, detail, evidence, family=self.family, title=title, severity=severity)


def hygiene_findings(
    target_host: str,
    port: int,
    facts: SessionFacts,
    hygiene: HygieneFacts,
    family: str,
    *,
    now: datetime | None = None,
) -> list[Finding]:
    """One finding per problem seen in ``facts`` and ``hygiene``; ``None`` facts are not checked.

    ``now`` (timezone-aware; naive means UTC) decides certificate expiry, for testability.
    """
    moment = _aware(now) if now is not None else datetime.now(UTC)
    ctx = Context(target_host, port, facts, hygiene, family, moment)
    found: list[Finding] = []
    for check in CHECKS:
        found.extend(check(ctx))
    return found


# --- banner -----------------------------------------------------------------------------------


def check_banner(ctx: Context) -> list[Finding]:
    banner = ctx.facts.banner
    if banner is None:
        return []
    if is_masked_banner(banner):
        return [
            ctx.finding(
                "masked-banner",
                f"The greeting {str(banner)!r} is made of asterisks: a firewall doing SMTP inspection "
                "(Cisco PIX/ASA and similar) sits in front of the mail server and rewrites the dialogue. "
                "It may itself accept, refuse or relay mail, hide STARTTLS and change the EHLO exchange, "
                "so the results for this target may describe the middlebox rather than the MTA.",
                [str(banner)],
            )
        ]
    disclosed = banner_disclosure(banner)
    if disclosed is None:
        return []
    if disclosed.version:
        return [
            ctx.finding(
                "banner-version",
                f"The greeting names the software and its version ({disclosed.product} {disclosed.version}), "
                "which tells anyone which vulnerabilities to try.",
                [str(banner)],
                title=f"The greeting discloses {disclosed.product} {disclosed.version}",
            )
        ]
    return [
        ctx.finding(
            "banner-version",
            f"The greeting names the software ({disclosed.product}) but not its version.",
            [str(banner)],
            title=f"The greeting names the MTA software ({disclosed.product})",
            severity=Severity.INFO,
        )
    ]


# --- reverse DNS ------------------------------------------------------------------------------


def check_reverse_dns(ctx: Context) -> list[Finding]:
    names = ctx.hygiene.ptr_names
    if names is None:
        return []
    if not names:
        return [
            ctx.finding(
                "no-ptr",
                f"The address of {ctx.target_host} has no PTR record. Many receivers refuse or "
                "score down mail from addresses without reverse DNS.",
            )
        ]
    found: list[Finding] = []
    ptr = {_host(n) for n in names}
    shown = ", ".join(sorted(ptr))
    if ctx.hygiene.fcrdns is False:
        found.append(
            ctx.finding(
                "no-fcrdns",
                f"The PTR name(s) {shown} do not resolve back to the address of {ctx.target_host}: "
                "reverse DNS is not forward-confirmed, which receivers treat like a missing PTR.",
                [f"PTR: {n}" for n in names],
            )
        )
    generic = next(((n, why) for n in sorted(ptr) if (why := _generic_name(n, ctx.facts.ip_literal))), None)
    if generic is not None:
        name, why = generic
        found.append(ctx.finding("ptr-generic", f"The PTR name {name} {why}: it reads like an ISP's name for a "
                                 "dial-up or dynamic address, not a mail server's own.", [f"PTR: {name}"]))
    banner_host = _host(ctx.facts.banner_host) if ctx.facts.banner_host else None
    if banner_host and banner_host not in ptr:
        found.append(
            ctx.finding(
                "banner-ptr-mismatch",
                f"The greeting announces {banner_host}, but the address's PTR name is {shown}.",
                [str(ctx.facts.banner) if ctx.facts.banner else banner_host, *(f"PTR: {n}" for n in names)],
            )
        )
    ehlo_host = _host(ctx.facts.ehlo_host) if ctx.facts.ehlo_host else None
    if ehlo_host and ehlo_host != banner_host and ehlo_host not in ptr:
        found.append(
            ctx.finding(
                "ehlo-ptr-mismatch",
                f"The EHLO reply names the server {ehlo_host}, but the address's PTR name is {shown}.",
                [f"EHLO host: {ehlo_host}", *(f"PTR: {n}" for n in names)],
            )
        )
    return found


def _generic_name(name: str, literal: str | None) -> str | None:
    """Why a PTR name looks generic, or None: it spells out the IPv4 address (either order, any
    separator) or has a dial-up word as a label or label prefix."""
    address = (literal or "").strip("[]")
    if address.count(".") == 3:
        octets = address.split(".")
        for order in (octets, octets[::-1]):
            if re.search(r"(?<!\d)" + r"\D{1,3}".join(order) + r"(?!\d)", name):
                return "spells out the address"
    word = GENERIC_PTR_WORDS.search(name)
    return f"contains '{word.group(2)}'" if word else None


# --- TLS --------------------------------------------------------------------------------------


def check_starttls(ctx: Context) -> list[Finding]:
    if ctx.port not in SUBMISSION_AND_MX_PORTS or ctx.facts.banner is None:
        return []
    tls = ctx.hygiene.tls
    if ctx.facts.starttls_offered or (tls is not None and tls.offered):
        return []
    why = "" if ctx.facts.esmtp else " (it did not accept EHLO at all, so it cannot offer extensions)"
    masked = (
        " The greeting is masked by an SMTP-inspecting firewall, which commonly strips STARTTLS."
        if is_masked_banner(ctx.facts.banner)
        else ""
    )
    return [
        ctx.finding(
            "no-starttls",
            f"Port {ctx.port} does not offer STARTTLS{why}: mail to and from this server, and any "
            f"password sent to it, travels unencrypted.{masked}",
            ["EHLO: " + " ".join(ctx.facts.extensions)] if ctx.facts.extensions else [],
        )
    ]


def check_tls(ctx: Context) -> list[Finding]:
    tls = ctx.hygiene.tls
    if tls is None or not tls.offered:
        return []
    if not tls.established:
        return [
            ctx.finding(
                "tls-handshake-failed",
                "TLS is offered but the handshake failed"
                + (f": {tls.error}" if tls.error else "")
                + ". Senders that try TLS give up or fall back to clear text.",
                [tls.error] if tls.error else [],
            )
        ]
    found: list[Finding] = []
    if tls.version in OLD_TLS_VERSIONS:
        found.append(
            ctx.finding(
                "tls-old-version",
                f"The server agreed to {tls.version}; TLS 1.2 is the oldest version still considered safe "
                "(RFC 8996 deprecates TLS 1.0 and 1.1).",
                [f"protocol: {tls.version}", *([f"cipher: {tls.cipher}"] if tls.cipher else [])],
            )
        )
    weak = [why for pattern, why in WEAK_CIPHERS if tls.cipher and pattern.search(tls.cipher)]
    if weak and tls.cipher:
        found.append(
            ctx.finding(
                "tls-weak-cipher",
                f"The server chose the cipher suite {tls.cipher}: {'; '.join(weak)}.",
                [f"cipher: {tls.cipher}"],
            )
        )
    found.extend(_certificate(ctx))
    return found


def _certificate(ctx: Context) -> list[Finding]:
    tls = ctx.hygiene.tls
    assert tls is not None
    found: list[Finding] = []
    subject = tls.cert_subject or "(no CN)"
    names = ", ".join(tls.cert_sans) or "none"
    cert_evidence = [f"subject CN: {subject}", f"subjectAltName: {names}"]
    if tls.cert_issuer:
        cert_evidence.append(f"issuer: {tls.cert_issuer}")
    not_after = _parse_time(tls.not_after)
    if not_after is not None:
        left = not_after - ctx.now
        if left <= timedelta(0):
            found.append(
                ctx.finding(
                    "cert-expired",
                    f"The certificate ({subject}) expired on {not_after:%Y-%m-%d %H:%M} UTC, "
                    f"{_days(-left)} ago. Senders that verify certificates will not deliver over TLS.",
                    [f"notAfter: {tls.not_after}", *cert_evidence],
                )
            )
        elif left < EXPIRY_WARNING:
            found.append(
                ctx.finding(
                    "cert-expires-soon",
                    f"The certificate ({subject}) expires on {not_after:%Y-%m-%d %H:%M} UTC, in {_days(left)}.",
                    [f"notAfter: {tls.not_after}", *cert_evidence],
                )
            )
    if tls.self_signed:
        found.append(
            ctx.finding(
                "cert-self-signed",
                f"The certificate ({subject}) is self-signed. Most MX-to-MX mail still flows (senders "
                "rarely verify), but senders enforcing MTA-STS and clients on 465/587 refuse it.",
                cert_evidence,
            )
        )
    elif tls.chain_verified is False:
        found.append(
            ctx.finding(
                "cert-untrusted",
                f"The certificate chain ({subject}) does not verify against public CAs"
                + (f": {tls.verify_error}" if tls.verify_error else "")
                + ". A missing intermediate certificate is the usual cause.",
                [*([tls.verify_error] if tls.verify_error else []), *cert_evidence],
            )
        )
    if tls.hostname_matches is False:
        found.append(
            ctx.finding(
                "cert-name-mismatch",
                f"The certificate names {names} (CN {subject}) but not {ctx.target_host}. Not fatal for "
                "opportunistic MX traffic; senders that check names (MTA-STS) refuse it.",
                cert_evidence,
            )
        )
    return found


# --- AUTH -------------------------------------------------------------------------------------


def check_auth(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    offered = [m.upper() for m in ctx.hygiene.auth_before_tls]
    cleartext = [m for m in offered if m in CLEARTEXT_MECHANISMS]
    if cleartext:
        found.append(
            ctx.finding(
                "auth-without-tls",
                f"Before STARTTLS the server offers AUTH {' '.join(cleartext)}: a client that logs in "
                "there sends its password readably over the network.",
                ["AUTH " + " ".join(offered)],
            )
        )
    bypass = ctx.hygiene.auth_bypass_reply
    if bypass is not None and bypass.code == 235:
        relay = ctx.hygiene.auth_bypass_relay
        relayed = relay is not None and 200 <= relay.code < 300
        evidence = [f"AUTH with a random user/password -> {bypass}"]
        if relay is not None:
            evidence.append(f"RCPT to an outside recipient after it -> {relay}")
        if relayed:
            found.append(
                ctx.finding(
                    "auth-bypass",
                    "The server accepted one AUTH with a random user name and password (235), then accepted "
                    "an outside recipient: any password relays. This is an open relay for anyone who "
                    "sends AUTH first.",
                    evidence,
                    title="Any password relays: a made-up login was accepted and then relayed",
                )
            )
        else:
            refused = f" The relay attempt after it was refused ({relay})." if relay is not None else ""
            found.append(
                ctx.finding(
                    "auth-bypass",
                    "The server accepted one AUTH with a random user name and password (235): its "
                    f"authentication backend accepts anything.{refused}",
                    evidence,
                )
            )
    return found


# --- VRFY / EXPN ------------------------------------------------------------------------------


def check_vrfy(ctx: Context) -> list[Finding]:
    """Enumeration needs a difference: 250/251 for postmaster while a random user is refused.

    252 ("cannot verify, will try") and a server that says 250 to everything reveal nothing.
    """
    h = ctx.hygiene
    vrfy_tells = (
        _answers_with_data(h.vrfy_postmaster)
        and h.vrfy_random is not None
        and h.vrfy_random.permanent
        and h.vrfy_random.code not in (500, 502, 504)  # "not implemented" is not an answer
    )
    # A server that says 250 to a made-up user says yes to anything: its EXPN 250 proves nothing either.
    says_yes_to_anyone = _answers_with_data(h.vrfy_random)
    expn_tells = (
        h.expn_postmaster is not None and h.expn_postmaster.code == 250 and not says_yes_to_anyone
    )  # 251/252 expand nothing
    if not (vrfy_tells or expn_tells):
        return []
    evidence = []
    if vrfy_tells:
        evidence += [f"VRFY postmaster -> {h.vrfy_postmaster}", f"VRFY <random user> -> {h.vrfy_random}"]
    if expn_tells:
        evidence.append(f"EXPN postmaster -> {h.expn_postmaster}")
    what = " and ".join(c for c, on in (("VRFY", vrfy_tells), ("EXPN", expn_tells)) if on)
    return [
        ctx.finding(
            "vrfy-enabled",
            f"{what} answer with real data: existing mailboxes are confirmed and others refused, so "
            "anyone can enumerate users (for spam or password guessing).",
            evidence,
        )
    ]


def _answers_with_data(reply: Reply | None) -> bool:
    return reply is not None and reply.code in (250, 251)


# --- DNS blocklists ---------------------------------------------------------------------------


def check_dnsbl(ctx: Context) -> list[Finding]:
    found: list[Finding] = []
    for result in ctx.hygiene.dnsbl or ():
        info = zone_info(result.zone)
        evidence = [f"{result.zone}: {', '.join(result.codes) or 'no answer'}"]
        if result.txt:
            evidence.append(f"TXT: {result.txt}")
        if result.listed is True:
            delist = f" Delisting: {info.delist}." if info.delist else ""
            txt = f" The zone says: {result.txt}." if result.txt else ""
            found.append(
                ctx.finding(
                    "dnsbl-listed",
                    f"{info.title} lists the address of {ctx.target_host} ({result.meaning}).{txt} Receivers "
                    f"using this list refuse or score down its mail.{delist}",
                    evidence,
                    title=f"Listed on {result.zone}",
                )
            )
        elif result.listed is None:
            note = f" {info.note}" if info.note else ""
            found.append(
                ctx.finding(
                    "dnsbl-unknown",
                    f"{result.zone} gave no usable answer ({result.meaning or 'no answer'}).{note}",
                    evidence,
                    title=f"No answer from {result.zone}",
                )
            )
    return found


CHECKS: tuple[Callable[[Context], list[Finding]], ...] = (
    check_banner,
    check_reverse_dns,
    check_starttls,
    check_tls,
    check_auth,
    check_vrfy,
    check_dnsbl,
)


# --- helpers ----------------------------------------------------------------------------------


def _host(name: str | None) -> str:
    return (name or "").strip().rstrip(".").lower()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return _aware(datetime.fromisoformat(text.strip()))
    except ValueError:
        return None


def _days(span: timedelta) -> str:
    days = span.days
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = max(1, int(span.total_seconds() // 3600))
    return f"{hours} hour{'s' if hours != 1 else ''}"


def with_remediation(findings: Iterable[Finding], family: str) -> list[Finding]:
    """Attach (or refresh) the family's fix on findings made elsewhere (e.g. by verdict.py)."""
    return [replace(f, remediation=registry.fix_for(f.code, family) or f.remediation) for f in findings]
