"""DNS with dnspython's async resolver: MX expansion (RFC 5321 §5.1, RFC 7505 null MX), A/AAAA.

The resolver is injectable (``--resolver IP[:PORT]``) so tests and labs use their own server and
never the machine's. Every failure becomes a ``DnsError`` with a one-line message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from relaycheck.errors import DnsError, UsageError
from relaycheck.names import is_hostname


@dataclass(frozen=True)
class MxHost:
    preference: int
    host: str


def make_resolver(server: str | None = None, timeout: float = 5.0) -> dns.asyncresolver.Resolver:
    """The system resolver, or one that asks only ``server`` (``IP`` or ``IP:PORT``, ``[v6]:PORT``)."""
    if server is None:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise DnsError("no DNS resolver is configured on this machine; use --resolver IP") from None
    else:
        address, given_port = split_host_port(server, default_port=53)
        port = given_port or 53
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise UsageError(f"--resolver needs an IP address, not {server!r}") from None
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [address]
        resolver.port = port
    resolver.lifetime = timeout
    return resolver


def split_host_port(text: str, default_port: int | None) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``1.2.3.4:25``, ``[2001:db8::1]:25``, bare ``2001:db8::1``."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise UsageError(f"cannot read {text!r}: expected [address] or [address]:port")
        if not host:
            raise UsageError(f"empty address in {text!r}")
        if rest and not rest.startswith(":"):
            raise UsageError(f"cannot read {text!r}: expected [address]:port")
        return host, _port(rest[1:], text) if rest else default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port, text)
    return text, default_port


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise UsageError(f"bad port in {whole!r}: ports are numbers from 1 to 65535")
    return int(text)


async def _query(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list[str]:
    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        raise
    except dns.resolver.NoNameservers:
        raise DnsError(f"no DNS server could answer for {name} ({rdtype})") from None
    except dns.exception.Timeout:
        raise DnsError(f"DNS lookup of {name} ({rdtype}) timed out") from None
    except dns.exception.DNSException as exc:
        raise DnsError(f"DNS lookup of {name} ({rdtype}) failed: {exc}") from None
    return [rr.to_text() for rr in answer]


async def lookup_mx(resolver: dns.asyncresolver.Resolver, domain: str) -> list[MxHost] | None:
    """MX hosts sorted by preference; ``None`` when the name has no MX records at all.

    A null MX (``0 .``) is returned as an empty list: the domain accepts no mail (RFC 7505).
    Raises ``DnsError`` when the name does not exist.
    """
    try:
        records = await _query(resolver, domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise DnsError(f"{domain}: no such domain (NXDOMAIN)") from None
    except dns.resolver.NoAnswer:
        return None
    hosts: list[MxHost] = []
    for record in records:
        preference, _, host = record.partition(" ")
        host = host.rstrip(".").lower()
        if host:
            hosts.append(MxHost(int(preference), host))
    return sorted(hosts, key=lambda m: (m.preference, m.host))


async def lookup_addresses(resolver: dns.asyncresolver.Resolver | None, host: str) -> list[str]:
    """IPv4 then IPv6 addresses of ``host``: through ``resolver``, or the system's lookup (hosts
    file, search domains) when none was named. A dot-less name follows the resolver like any other,
    except ``localhost`` and its subdomains, which are the loopback addresses whatever a resolver
    says (RFC 6761 6.3): an MX named localhost must be seen as loopback, not as a DNS failure."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return ["127.0.0.1", "::1"]
    if resolver is None:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise DnsError(f"{host}: cannot resolve ({exc.strerror})") from None
        return sorted({str(i[4][0]) for i in infos}, key=lambda a: (":" in a, a))
    found: list[str] = []
    missing = 0
    for rdtype in ("A", "AAAA"):
        try:
            found += await _query(resolver, host, rdtype)
        except dns.resolver.NXDOMAIN:
            raise DnsError(f"{host}: no such host (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            missing += 1
    if not found:
        raise DnsError(f"{host}: has no A or AAAA record")
    return found


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def valid_hostname(name: str) -> bool:
    return is_hostname(name)
