"""PURE: address blocks as integer intervals: ``IP``, ``CIDR`` and ``a-b`` ranges, IPv4 and IPv6.

A block is ``(version, first, last)`` with ``first``/``last`` as integers, so that a /8 is two
numbers, not sixteen million objects. Shared by target sources and exclude lists.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from relaycheck.errors import UsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_BLOCK = 2**32  # addresses one input may expand to (an IPv4 /0; an IPv6 /96)


@dataclass(frozen=True, slots=True)
class Block:
    version: int
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def address(self, value: int) -> str:
        return to_text(self.version, value)

    def __str__(self) -> str:
        if self.first == self.last:
            return self.address(self.first)
        cidr = _as_cidr(self)
        return cidr or f"{self.address(self.first)}-{self.address(self.last)}"


def _as_cidr(block: Block) -> str | None:
    bits = 32 if block.version == 4 else 128
    size = block.size
    if size & (size - 1) or block.first % size:
        return None
    prefix = bits - (size.bit_length() - 1)
    return f"{to_text(block.version, block.first)}/{prefix}"


def to_text(version: int, value: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(value))
    return ipaddress.IPv6Address(value).compressed


def parse_ip(text: str) -> IPAddress | None:
    """An address, or None. IPv6 zone ids are refused (they only make sense on a local link)."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def looks_like_block(text: str) -> bool:
    """True when ``text`` is meant as an address, a CIDR block or a range (not a host name)."""
    text = text.strip()
    if "/" in text:
        return True
    if "-" in text:
        left, _, right = text.partition("-")
        return parse_ip(left) is not None and (parse_ip(right) is not None or right.isdigit())
    return parse_ip(text) is not None


def parse_block(text: str, max_size: int | None = MAX_BLOCK) -> Block:
    """``192.0.2.7``, ``192.0.2.0/24``, ``192.0.2.10-192.0.2.20``, ``192.0.2.10-20``, IPv6 alike.

    Raises ``UsageError`` with a one-line reason. A CIDR block with host bits set is taken as its
    network (``192.0.2.7/24`` is ``192.0.2.0/24``), as zmap and masscan do. ``max_size`` bounds
    what a scan input may expand to (exclude lists have no bound).
    """
    text = text.strip()
    if not text:
        raise UsageError("empty address block")
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise UsageError(f"not a CIDR block: {text!r}") from None
        block = Block(network.version, int(network.network_address), int(network.broadcast_address))
    elif "-" in text and parse_ip(text) is None:
        left, _, right = (part.strip() for part in text.partition("-"))
        start = parse_ip(left)
        if start is None:
            raise UsageError(f"not an address range: {text!r}")
        end = parse_ip(right)
        if end is None and right.isdigit() and start.version == 4 and int(right) <= 255:
            end = ipaddress.IPv4Address((int(start) & ~0xFF) | int(right))  # 192.0.2.10-20
        if end is None or end.version != start.version:
            raise UsageError(f"not an address range: {text!r}")
        if int(end) < int(start):
            raise UsageError(f"range ends before it starts: {text!r}")
        block = Block(start.version, int(start), int(end))
    else:
        ip = parse_ip(text)
        if ip is None:
            raise UsageError(f"not an IP address, CIDR block or range: {text!r}")
        block = Block(ip.version, int(ip), int(ip))
    if max_size is not None and block.size > max_size:
        raise UsageError(f"{text}: {block.size:,} addresses is more than one scan input may expand to (2^32)")
    return block


def subnet_of(version: int, value: int) -> tuple[int, int]:
    """The /24 (IPv4) or /64 (IPv6) an address belongs to: the unit of the per-subnet cap."""
    return (4, value >> 8) if version == 4 else (6, value >> 64)
