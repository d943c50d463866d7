"""How wide is a trusted network? One vocabulary for mynetworks, relay_from_hosts, RemoteIPRanges…

"Outside" means any address that is not loopback, link-local, RFC 1918, CGNAT or ULA. The RFC
5737/2544 documentation and benchmarking ranges count as outside on purpose: they stand for
Internet addresses in examples and in the integration lab (198.18.0.0/15).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

INTERNAL_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/32",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)

# A trusted outside network this big (or bigger) lets strangers relay: a /16 is 65 536 hosts,
# far more than any one organisation's mail clients; an IPv6 /48 is a whole site allocation.
WIDE_V4_PREFIX = 16
WIDE_V6_PREFIX = 48


class Width(IntEnum):
    """Ordered: a list of networks is as wide as its widest member."""

    NONE = 0  # nothing, or only internal addresses
    HOST = 1  # single outside addresses
    OUTSIDE_RANGE = 2  # an outside range narrower than WIDE_*: check it is all yours
    OUTSIDE_WIDE = 3  # an outside range of at least a /16 (/48): strangers in it may relay
    EVERYONE = 4  # every address (0.0.0.0/0, ::/0, 0.0.0.0-255.255.255.255, "*")


def code_for_width(width: Width, codes: tuple[str, str, str]) -> str | None:
    """The finding code for an outside network of ``width``: ``codes`` are those for everyone,
    a wide outside network and an outside range; None for narrower ones."""
    widths = (Width.EVERYONE, Width.OUTSIDE_WIDE, Width.OUTSIDE_RANGE)
    return codes[widths.index(width)] if width in widths else None


@dataclass(frozen=True)
class Judged:
    width: Width
    widest: str  # the member that made it that wide, as written


def _internal(net: IPNetwork) -> bool:
    return any(net.version == i.version and net.subnet_of(i) for i in INTERNAL_NETWORKS)  # type: ignore[arg-type]


_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def width_of_network(net: IPNetwork) -> Width:
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_V4_MAPPED):
        # [::ffff:127.0.0.0]/104 (Debian's default mynetworks) is 127.0.0.0/8 seen through IPv6.
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return width_of_network(ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}", strict=False))
    if net.prefixlen == 0:
        return Width.EVERYONE
    if _internal(net):
        return Width.NONE
    if net.num_addresses == 1:
        return Width.HOST
    wide = WIDE_V4_PREFIX if net.version == 4 else WIDE_V6_PREFIX
    return Width.OUTSIDE_WIDE if net.prefixlen <= wide else Width.OUTSIDE_RANGE


def parse_network(text: str) -> IPNetwork | None:
    """``1.2.3.4``, ``1.2.3.0/24``, ``[2001:db8::]/32``, ``[::1]`` -> network; anything else None."""
    value = text.strip()
    if value.startswith("["):
        inside, _, rest = value[1:].partition("]")
        value = inside + rest
    if value.lower().startswith("ipv6:"):
        value = value[5:]
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def parse_range(text: str) -> list[IPNetwork] | None:
    """``a-b`` (Exchange RemoteIPRanges), a CIDR or a single address -> the networks it covers."""
    value = text.strip()
    if "-" in value and "/" not in value:
        low_text, _, high_text = value.partition("-")
        try:
            low = ipaddress.ip_address(low_text.strip())
            high = ipaddress.ip_address(high_text.strip())
            if low.version != high.version or int(low) > int(high):
                return None
            return list(ipaddress.summarize_address_range(low, high))
        except ValueError:
            return None
    net = parse_network(value)
    return None if net is None else [net]


def covers_everything(nets: Iterable[IPNetwork]) -> bool:
    """Whether the union covers all of IPv4 or all of IPv6 (e.g. 0.0.0.0/1 + 128.0.0.0/1)."""
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    v4_all = bool(v4) and any(n.prefixlen == 0 for n in ipaddress.collapse_addresses(v4))
    v6_all = bool(v6) and any(n.prefixlen == 0 for n in ipaddress.collapse_addresses(v6))
    return v4_all or v6_all


def judge(members: Iterable[tuple[str, IPNetwork]]) -> Judged:
    """The width of a list of (as written, network) pairs: the widest member wins."""
    pairs = list(members)
    if covers_everything(n for _, n in pairs):
        return Judged(Width.EVERYONE, " ".join(w for w, n in pairs if not _internal(n)) or pairs[0][0])
    best = Judged(Width.NONE, "")
    for written, net in pairs:
        width = width_of_network(net)
        if width > best.width:
            best = Judged(width, written)
    return best


def sendmail_prefix(text: str) -> IPNetwork | None:
    """Sendmail/OpenSMTPD-style dotted prefixes: ``10`` -> 10.0.0.0/8, ``192.168`` -> /16."""
    parts = text.strip().rstrip(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        return None
    octets = [*parts, *["0"] * (4 - len(parts))]
    return ipaddress.ip_network(f"{'.'.join(octets)}/{8 * len(parts)}")


# Single-label names that are not public top-level domains (RFC 6761/6762 and common LAN names).
NON_PUBLIC_LABELS = frozenset(
    {"localhost", "localdomain", "local", "lan", "home", "internal", "intranet", "corp", "invalid"}
)


def is_tld(name: str) -> bool:
    """A bare top-level domain such as ``com`` or ``.net``: matching it matches a whole TLD."""
    bare = name.strip().lstrip("*").lstrip(".").lower()
    return (
        bool(bare)
        and "." not in bare
        and not set(bare) & set("@:/$[]{}=*")
        and not bare.isdigit()
        and bare not in NON_PUBLIC_LABELS
    )


def ipv6_prefix(text: str) -> IPNetwork | None:
    """Sendmail's ``IPv6:2001:db8`` keys: whole 16-bit groups, matched as a prefix (-> /32)."""
    value = text.strip()
    if "::" in value or "/" in value:
        return parse_network(value)
    groups = value.split(":")
    if not 1 <= len(groups) <= 8 or not all(1 <= len(g) <= 4 for g in groups):
        return None
    try:
        return ipaddress.IPv6Network(f"{':'.join(groups)}{'::' if len(groups) < 8 else ''}/{16 * len(groups)}")
    except ValueError:
        return None


def is_loopback_address(text: str) -> bool:
    value = text.strip().strip("[]").lower()
    if value in {"localhost", "loopback-only", "lo", "lo0"}:
        return True
    try:
        return ipaddress.ip_address(value).is_loopback
    except ValueError:
        return False
