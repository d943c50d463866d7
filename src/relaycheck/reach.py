"""PURE: which addresses relaycheck may connect to. One policy, two users:

- the web service vets every address a request leads to (``refusal``): a public relay tester
  must not be pointed inward;
- a scan starts from the same list as its default excludes (``scan.excludes``), and adds the
  user's own.

The data is ``iana-special-purpose.txt``: the IANA special-purpose registries, IPv4 and IPv6,
plus multicast, one block per line with its reason. ``serve --allow-private`` and
``scan --include-reserved`` lift it, except the blocks nobody can connect to (unspecified,
multicast, broadcast). An IPv6 address that carries an IPv4 address (IPv4-mapped, NAT64, 6to4,
Teredo) is judged by the IPv4 address inside it too; a scan, whose excludes are blocks, leaves
the translation prefixes out altogether (it tests the IPv4 address itself).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cache
from importlib import resources

from relaycheck.errors import UsageError
from relaycheck.scan.addresses import Block, parse_block

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SPECIAL_PURPOSE_LIST = "iana-special-purpose.txt"
# The blocks no one can connect to: refused even in a lab.
NEVER_REACHABLE = frozenset({"0.0.0.0", "224.0.0.0/4", "255.255.255.255", "::", "ff00::/8"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: IPv4 in the last 32 bits


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A block relaycheck does not connect to, and why (shown in records and refusals)."""

    block: Block
    reason: str


def parse_exclusions(text: str, source: str) -> list[Exclusion]:
    """Exclusions from blocklist text (zmap format: one IP, CIDR or a-b range per line, ``#``
    starts the reason); ``UsageError`` names the file and line of a bad entry."""
    found: list[Exclusion] = []
    for number, line in enumerate(text.splitlines(), 1):
        spec, _, comment = line.partition("#")
        spec = spec.strip()
        if not spec:
            continue
        for part in spec.replace(",", " ").split():
            try:
                block = parse_block(part, max_size=None)
            except UsageError as exc:
                raise UsageError(f"{source}:{number}: {exc}") from None
            found.append(Exclusion(block, comment.strip() or f"listed in {source}"))
    return found


@cache
def special_purpose() -> tuple[Exclusion, ...]:
    text = resources.files("relaycheck").joinpath(SPECIAL_PURPOSE_LIST).read_text(encoding="utf-8")
    return tuple(parse_exclusions(text, SPECIAL_PURPOSE_LIST))


def never_reachable() -> tuple[Exclusion, ...]:
    return tuple(e for e in special_purpose() if str(e.block) in NEVER_REACHABLE)


def _most_specific(ip: IPAddress, exclusions: tuple[Exclusion, ...]) -> Exclusion | None:
    value = int(ip)
    covering = [e for e in exclusions if e.block.version == ip.version and e.block.first <= value <= e.block.last]
    return min(covering, key=lambda e: e.block.size, default=None)


def embedded_ipv4(ip: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for, with the mechanism's name."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    return None


def _why(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``ip`` itself (not what it carries) may not be contacted."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return "a scoped (link-local) address"
    listed = _most_specific(ip, never_reachable() if allow_private else special_purpose())
    if listed is not None:
        return f"a special-purpose address: {listed.reason}"
    if not allow_private and not ip.is_global:  # a block this Python knows and the list does not
        return "not a globally routable address"
    return None


def refusal(address: str, *, allow_private: bool) -> str | None:
    """Why relaycheck will not connect to ``address``; ``None`` when it may."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r} is not an IP address"
    inner = embedded_ipv4(ip)
    if inner is not None:
        mechanism, v4 = inner
        why = _why(v4, allow_private=allow_private)
        if mechanism == "IPv4-mapped" and not allow_private:  # never a real destination in DNS
            return f"{ip} is an IPv4-mapped IPv6 address" + (f" (for {v4}, {why})" if why else "")
        if why:
            return f"{ip} is {mechanism} for {v4}, {why}"
        if mechanism == "NAT64":
            return None  # a public IPv4 server reached through the well-known NAT64 prefix
    why = _why(ip, allow_private=allow_private)
    return f"{ip} is {why}" if why else None
