"""PURE: every option value that reaches the wire (SMTP commands, DNS queries) checked before any
target is touched, one ``UsageError`` line each, naming the option.

The wire layer refuses CR, LF and NUL too, but only once a connection is open: a bad ``--helo``
must not become an internal error halfway through a scan. Internationalised domain names are
converted to their ASCII form (``mañana.example`` -> ``xn--maana-pta.example``), since that is
what DNS and SMTP without SMTPUTF8 carry.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from relaycheck.boundedio import shorten
from relaycheck.dns import split_host_port
from relaycheck.errors import UsageError
from relaycheck.names import is_hostname
from relaycheck.options import EngineOptions, HygieneOptions

# Printable ASCII, as RFC 5321 allows in a local part (quoted ones included), without the
# characters that would end or confuse a path: space, <, >.
_LOCAL_PART_FORBIDDEN = set(" <>")


def _shown(value: str) -> str:
    return f"'{shorten(value)}'"  # control characters made visible once (repr would escape them again)


def idna_ascii(name: str) -> str:
    """``mañana.example`` -> ``xn--maana-pta.example``; ASCII names and names that cannot be
    converted are returned as they are (the host-name check that follows refuses the latter)."""
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


def ascii_domain(text: str) -> str:
    """``text`` as a lower-case ASCII domain name (IDN converted, a final dot dropped); raises
    ``ValueError`` when it is not one."""
    name = text.rstrip(".").lower()  # not strip(): "\rx" must be refused, not repaired
    if not name or not name.isprintable():
        raise ValueError(text)
    name = idna_ascii(name)
    if not is_hostname(name):
        raise ValueError(text)
    return name


def domain(value: str, option: str) -> str:
    try:
        return ascii_domain(value)
    except ValueError:
        raise UsageError(f"{option}: not a domain name: {_shown(value)}") from None


def helo_name(value: str, option: str = "--helo") -> str:
    """A domain or an address literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``), as RFC 5321
    allows in EHLO."""
    text = value
    if text.startswith("[") and text.endswith("]"):
        literal = text[1:-1]
        literal = literal[5:] if literal[:5].lower() == "ipv6:" else literal
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            raise UsageError(f"{option}: not an address literal: {_shown(value)}") from None
        return text
    try:
        return ascii_domain(text)
    except ValueError:
        raise UsageError(f"{option}: not a domain name or [address] literal: {_shown(value)}") from None


def address(value: str, option: str) -> str:
    """``local@domain``: the local part printable ASCII without space or angle brackets, the
    domain a domain name (IDN converted) or an address literal."""
    local, at, host = value.rpartition("@")
    bad = (
        not at
        or not local
        or not (local.isascii() and local.isprintable())
        or any(c in _LOCAL_PART_FORBIDDEN for c in local)
    )
    if not bad:
        try:
            host = helo_name(host, option) if host.startswith("[") else ascii_domain(host)
        except (UsageError, ValueError):
            bad = True
    if bad or ("." not in host and not host.startswith("[")):
        raise UsageError(f"{option}: not a mail address: {_shown(value)}")
    return f"{local}@{host}"


def resolver(value: str | None) -> str | None:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` (checked here so that a bad one is refused whatever
    the targets are, not only when a name has to be resolved)."""
    if value is None:
        return None
    try:
        host, _port = split_host_port(value, default_port=53)
        ipaddress.ip_address(host)
    except (UsageError, ValueError):
        raise UsageError(f"--resolver needs an IP address (IP, IP:PORT or [IPv6]:PORT), not {_shown(value)}") from None
    return value


def wire_ready(engine: EngineOptions) -> EngineOptions:
    """``engine`` with every value that reaches a server or a resolver checked and normalised."""
    hygiene: HygieneOptions = engine.hygiene
    return replace(
        engine,
        helo=helo_name(engine.helo),
        local_domain=domain(engine.local_domain, "--local-domain") if engine.local_domain is not None else None,
        sender=address(engine.sender, "--sender") if engine.sender is not None else None,
        ext_recipients=tuple(address(a, "--ext-recipient") for a in engine.ext_recipients),
        confirm_address=address(engine.confirm_address, "--confirm") if engine.confirm_address is not None else None,
        resolver=resolver(engine.resolver),
        hygiene=replace(
            hygiene,
            dnsbl_zones=tuple(domain(z, "--dnsbl-zone") for z in hygiene.dnsbl_zones),
        ),
    )
