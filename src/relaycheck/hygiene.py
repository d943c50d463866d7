"""Hygiene checks, the I/O side: collect ``HygieneFacts`` for one target.

- ``dns_facts``: PTR, forward-confirmed reverse DNS, DNSBL listings (concurrent lookups);
- ``inspect_session``: one extra SMTP session for VRFY/EXPN, then STARTTLS with a *verifying*
  context (certificate, protocol, cipher; a second handshake only when verification fails),
  and the AUTH mechanisms offered after TLS;
- ``auth_bypass_check``: with ``--auth-bypass-check`` only, exactly ONE AUTH attempt with a
  random user and password, then one relay RCPT. Never more: no credential guessing.

What the facts mean is decided elsewhere (``findings/hygiene.py``, pure).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import ipaddress
import os
import secrets
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from relaycheck.errors import CertificateUnverified, ProtocolError, TlsError, TransportError
from relaycheck.model import DnsblResult, Reply, TlsFacts, Transport
from relaycheck.names import is_hostname
from relaycheck.options import HygieneOptions
from relaycheck.smtp.session import PartialReplies, SmtpSession
from relaycheck.smtp.wire import command_line, mail_from, rcpt_to

_FAILURES = (TransportError, ProtocolError, PartialReplies)

__all__ = ["HygieneOptions", "SessionInspection", "auth_bypass_check", "dns_facts", "inspect_session", "tls_facts"]


# -- DNS -----------------------------------------------------------------------------------------


async def _answers(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list[str] | None:
    """Record texts; [] for NXDOMAIN/no answer; None when the lookup itself failed."""
    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException:
        return None
    return [rr.to_text().strip('"') for rr in answer]


async def lookup_ptr(
    resolver: dns.asyncresolver.Resolver, address: str
) -> tuple[tuple[str, ...] | None, bool | None]:
    """PTR names of ``address`` and whether one of them resolves back to it (FCrDNS).

    ``(None, None)`` when the lookup itself failed (timeout, SERVFAIL): that is not "no PTR".
    """
    names = await _answers(resolver, dns.reversename.from_address(address).to_text(), "PTR")
    if names is None:
        return None, None
    if not names:
        return (), False
    ptrs = tuple(n.rstrip(".").lower() for n in names)
    rdtype = "AAAA" if ":" in address else "A"
    forward = await asyncio.gather(*(_answers(resolver, n, rdtype) for n in ptrs if is_hostname(n)))
    back = {a for answers in forward if answers for a in answers}
    return ptrs, _same_address(address, back)


def _same_address(address: str, candidates: set[str]) -> bool:
    wanted = ipaddress.ip_address(address)
    return any(_ip(c) == wanted for c in candidates)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def lookup_dnsbl(
    resolver: dns.asyncresolver.Resolver, address: str, zones: Sequence[str]
) -> tuple[DnsblResult, ...]:
    """Every zone asked at once; a failed lookup is ``listed=None`` (unknown), never 'clean'."""
    from relaycheck import dnsbl

    async def one(zone: str) -> DnsblResult:
        name = dnsbl.query_name(address, zone)
        answers = await _answers(resolver, name, "A")
        if answers is None:
            return DnsblResult(zone, None, (), "the lookup failed (timeout or server failure)")
        txt = None
        if answers:
            texts = await _answers(resolver, name, "TXT")
            txt = " ".join(texts) if texts else None
        return dnsbl.interpret(zone, answers, txt)

    return tuple(await asyncio.gather(*(one(z) for z in zones)))


def dnsbl_zone_names(options: HygieneOptions, address: str) -> tuple[str, ...]:
    from relaycheck import dnsbl

    if options.dnsbl_zones:
        chosen = list(options.dnsbl_zones)
    else:
        chosen = [z.name for z in dnsbl.load_zones() if ":" not in address or z.ipv6]
    return tuple(dict.fromkeys(chosen))


async def dns_facts(
    resolver: dns.asyncresolver.Resolver, address: str, options: HygieneOptions
) -> tuple[tuple[str, ...] | None, bool | None, tuple[DnsblResult, ...] | None]:
    async def ptr() -> tuple[tuple[str, ...] | None, bool | None]:
        if not options.ptr:
            return None, None
        return await lookup_ptr(resolver, address)

    async def blocklists() -> tuple[DnsblResult, ...] | None:
        if not options.dnsbl:
            return None
        return await lookup_dnsbl(resolver, address, dnsbl_zone_names(options, address))

    (names, fcrdns), listed = await asyncio.gather(ptr(), blocklists())
    return names, fcrdns, listed


# -- TLS -----------------------------------------------------------------------------------------


@functools.cache
@functools.cache
def verifying_tls_context() -> ssl.SSLContext:
    """The machine's trust store; host names are compared by us (an MX name is often not the CN).

    Made once per process, and only when needed. Loading the whole CA bundle costs ~40 ms (every
    certificate parsed up front); where the system has a hashed certificate directory (Debian's
    /etc/ssl/certs), OpenSSL looks the issuer up there when a chain is verified instead.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    paths = ssl.get_default_verify_paths()
    if paths.capath and not os.environ.get(paths.openssl_cafile_env) and _hashed(paths.capath):
        context.load_verify_locations(capath=paths.capath)
    else:
        context.load_default_certs()
    return context


def _hashed(directory: str) -> bool:
    """A directory of certificates named by subject hash (``c_rehash``, ``openssl rehash``)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    return any(len(n) == 10 and n[8] == "." and n[:8].isalnum() and n[9].isdigit() for n in names)


def _hostname_matches(host: str, names: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in (n.lower().rstrip(".") for n in names):
        if pattern == host:
            return True
        if pattern.startswith("*.") and host.count(".") >= 2 and host.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def tls_facts(ssl_object: ssl.SSLObject, host: str, *, offered: bool, verify_error: str | None) -> TlsFacts:
    """Protocol, cipher and certificate details of an established TLS session."""
    cipher = ssl_object.cipher()
    der = ssl_object.getpeercert(binary_form=True)
    base = TlsFacts(
        offered=offered,
        established=True,
        version=ssl_object.version(),
        cipher=cipher[0] if cipher else None,
        chain_verified=verify_error is None,
        verify_error=verify_error,
    )
    if not der:
        return base
    base = TlsFacts(**{**base.__dict__, "cert_sha256": hashlib.sha256(der).hexdigest()})
    from cryptography import x509  # only for servers that offer TLS: not imported by every scan
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return TlsFacts(**{**base.__dict__, "error": f"unreadable certificate: {exc}"})
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = str(common[0].value) if common else None
    try:
        sans = tuple(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        sans = ()
    is_name = is_hostname(host) and not _ip(host)
    return TlsFacts(
        offered=offered,
        established=True,
        version=base.version,
        cipher=base.cipher,
        cert_subject=subject,
        cert_sans=sans,
        cert_issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc.astimezone(UTC).isoformat(),
        not_after=cert.not_valid_after_utc.astimezone(UTC).isoformat(),
        self_signed=cert.issuer == cert.subject,
        chain_verified=verify_error is None,
        verify_error=verify_error,
        hostname_matches=_hostname_matches(host, sans or ((subject,) if subject else ())) if is_name else None,
        cert_sha256=base.cert_sha256,
    )


@dataclass(frozen=True)
class SessionInspection:
    tls: TlsFacts | None
    auth_after_tls: tuple[str, ...]
    vrfy_postmaster: Reply | None
    vrfy_random: Reply | None
    expn_postmaster: Reply | None


NewSession = Callable[[Transport, ssl.SSLContext | None], SmtpSession]


def auth_mechanisms(keywords: Sequence[str]) -> tuple[str, ...]:
    """The SASL mechanisms an EHLO reply's keywords offer (``AUTH PLAIN LOGIN``), upper-cased."""
    for keyword in keywords:
        word, _, rest = keyword.partition(" ")
        if word == "AUTH":
            return tuple(m.upper() for m in rest.split())
    return ()


async def inspect_session(
    new_session: NewSession,
    host: str,
    transport: Transport,
    starttls_offered: bool,
    options: HygieneOptions,
    local_domain: str,
    tls_required: bool = False,
) -> SessionInspection:
    """One session: VRFY/EXPN in clear text, then TLS with a verifying context.

    A server that requires STARTTLS refuses VRFY before it (530): then VRFY/EXPN are asked over
    TLS, where they get their real answer.
    """
    implicit = transport is Transport.TLS
    vrfy: tuple[Reply | None, Reply | None, Reply | None] = (None, None, None)
    verify_error: str | None = None
    will_tls = options.tls and (implicit or starttls_offered)
    vrfy_over_tls = tls_required and will_tls and not implicit
    context: ssl.SSLContext | None = verifying_tls_context() if will_tls else None
    for attempt in range(2):  # the second time without verification, to read the certificate
        session = new_session(transport, context if implicit else None)
        try:
            greeting = await session.connect()
            if greeting.code != 220:
                await session.quit()
                return SessionInspection(None, (), *vrfy)
            _, ehlo = await session.ehlo()
            if options.vrfy and attempt == 0 and not vrfy_over_tls:
                vrfy = await vrfy_replies(session, local_domain)
            if not options.tls or not (implicit or starttls_offered):
                await session.quit()
                offered = implicit or starttls_offered
                return SessionInspection(TlsFacts(offered=offered) if options.tls else None, (), *vrfy)
            if not implicit:
                reply = await session.starttls(context)
                if reply.code != 220:
                    await session.quit()
                    return SessionInspection(TlsFacts(offered=True, error=f"STARTTLS refused: {reply}"), (), *vrfy)
                _, ehlo = await session.ehlo()
                if options.vrfy and vrfy_over_tls:
                    vrfy = await vrfy_replies(session, local_domain)
            ssl_object = session.ssl_object
            facts = (
                tls_facts(ssl_object, host, offered=True, verify_error=verify_error)
                if ssl_object is not None
                else TlsFacts(offered=True, error="no TLS state")
            )
            await session.quit()
            return SessionInspection(facts, auth_mechanisms(ehlo.keywords if ehlo else ()), *vrfy)
        except _FAILURES as exc:
            session.abort()
            if not isinstance(exc, TlsError):
                # The session failed before or apart from TLS (refused, dropped, the server
                # stopped): nothing was seen of TLS, so nothing is said about it.
                return SessionInspection(None, (), *vrfy)
            if context is not None and isinstance(exc, CertificateUnverified):
                # Untrusted (self-signed, expired, unknown CA): note why, then look without verifying.
                verify_error = exc.reason
                context = None
                continue
            return SessionInspection(TlsFacts(offered=True, error=str(exc)), (), *vrfy)
    return SessionInspection(TlsFacts(offered=True, error="TLS could not be established"), (), *vrfy)


async def vrfy_replies(session: SmtpSession, local_domain: str) -> tuple[Reply | None, Reply | None, Reply | None]:
    random_user = "rc-nouser-" + secrets.token_hex(5)
    postmaster = await session.command(command_line("VRFY ", "postmaster"))
    unknown = await session.command(command_line("VRFY ", f"{random_user}@{local_domain}"))
    expn = await session.command(command_line("EXPN ", "postmaster"))
    return postmaster, unknown, expn


async def auth_bypass_check(
    new_session: NewSession,
    transport: Transport,
    starttls_offered: bool,
    sender: str,
    outside_recipient: str,
) -> tuple[Reply | None, Reply | None]:
    """Exactly one AUTH PLAIN with a random user and password, then one relay RCPT."""
    session = new_session(transport, None)
    try:
        greeting = await session.connect()
        if greeting.code != 220:
            await session.quit()
            return None, None
        await session.ehlo()
        if starttls_offered and transport is Transport.PLAIN and (await session.starttls()).code == 220:
            await session.ehlo()  # over TLS, as a client that wants to authenticate would
        user, password = "rc-" + secrets.token_hex(6), secrets.token_urlsafe(18)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        auth = await session.command(command_line("AUTH PLAIN ", token))
        relay: Reply | None = None
        mail = await session.command(mail_from(f"<{sender}>"))
        if mail.positive:
            relay = await session.command(rcpt_to(f"<{outside_recipient}>"))
        await session.quit()
        return auth, relay
    except _FAILURES:
        session.abort()
        return None, None
