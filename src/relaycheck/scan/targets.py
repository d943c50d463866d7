"""PURE: scan inputs -> a lazy stream of items (addresses, names, excluded ranges, bad lines).

Inputs are what zmap, masscan, nmap and zgrab2 users type: IPv4/IPv6 addresses, CIDR blocks,
``a-b`` ranges, host names and mail domains (every MX, resolved later), ``host:port``, and
zgrab2-style CSV lines ``ip,domain,tag,port``. Everything is a generator: a /8 is enumerated
one address at a time, in a seeded pseudo-random order (an affine permutation of the block,
so consecutive targets land in different /24s), and never held in memory.

Every item has a *key*; records carry the same key (``ip|port|name``), which is what resume,
sharding and the writer's de-duplication compare.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from relaycheck.boundedio import LongLine, capped_lines, open_input
from relaycheck.dns import split_host_port
from relaycheck.errors import UsageError
from relaycheck.names import is_hostname
from relaycheck.scan.addresses import Block, looks_like_block, parse_block, parse_ip
from relaycheck.scan.excludes import ExcludeList
from relaycheck.validate import idna_ascii


class Kind(StrEnum):
    ADDRESS = "address"  # one IP to test (``name``: a domain pinned to it by a CSV line)
    NAME = "name"  # a host name or mail domain, resolved at scan time (every MX)
    EXCLUDED = "excluded"  # an address or range the exclude list forbids
    INVALID = "invalid"  # an input line that could not be read


@dataclass(frozen=True, slots=True)
class Item:
    kind: Kind
    given: str  # the input it came from, as written (a CIDR block for each of its addresses)
    port: int
    ip: str | None = None
    name: str | None = None
    tag: str | None = None
    reason: str | None = None  # EXCLUDED: the exclude rule; INVALID: what is wrong
    block: str | None = None  # EXCLUDED: the excluded address or range
    port_given: bool = False  # NAME: a port was written (then no MX lookup, as in ``check``)

    @property
    def key(self) -> str:
        if self.kind is Kind.EXCLUDED:
            return record_key(self.block, self.port, self.name)
        if self.kind is Kind.INVALID:
            return "!" + self.given
        return record_key(self.ip, self.port, self.name)


def record_key(ip: str | None, port: int, name: str | None) -> str:
    """The identity of one record: address, port, and the name the user gave (if any)."""
    return f"{ip or ''}|{port}|{name or ''}"


Ports = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _BlockSpec:
    block: Block
    given: str
    ports: Ports
    name: str | None
    tag: str | None


Parsed = Item | _BlockSpec


# -- parsing ---------------------------------------------------------------------------------


def _parse_port(text: str, given: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise UsageError(f"bad port in {given!r}: ports are numbers from 1 to 65535")
    return int(text)


def parse_token(token: str, ports: Ports) -> Parsed:
    """One target written as an argument or a word of a list file. Raises ``UsageError``.

    An address or block without a port stands for each of ``ports``; a name is expanded (MX,
    then every port) when it is scanned.
    """
    token = token.strip()
    if looks_like_block(token):
        return _BlockSpec(parse_block(token), token, ports, None, None)
    host, given_port = split_host_port(token, default_port=None)
    host = idna_ascii(host.rstrip(".").lower())
    ip = parse_ip(host)
    if ip is not None:
        return _BlockSpec(Block(ip.version, int(ip), int(ip)), token, (given_port or ports[0],), None, None)
    if not is_hostname(host):
        raise UsageError(f"not an IP address, CIDR block, range, host name or domain: {token!r}")
    return Item(Kind.NAME, token, given_port or ports[0], name=host, port_given=given_port is not None)


def parse_csv_line(line: str, ports: Ports) -> Parsed:
    """zgrab2's ``ip,domain,tag,port``: either ip (an address or block) or domain is required."""
    fields = [f.strip() for f in next(csv.reader([line]))]
    fields += [""] * (4 - len(fields))
    if len(fields) > 4:
        raise UsageError(f"more than 4 fields (ip,domain,tag,port): {line!r}")
    ip, domain, tag, port_text = fields
    if port_text:
        ports = (_parse_port(port_text, line),)
    domain = domain.rstrip(".").lower()
    if domain and not is_hostname(domain):
        raise UsageError(f"not a domain: {domain!r}")
    if ip:
        if not looks_like_block(ip):
            raise UsageError(f"first field must be an IP address or block: {ip!r}")
        return _BlockSpec(parse_block(ip), line, ports, domain or None, tag or None)
    if not domain:
        raise UsageError(f"neither an IP nor a domain: {line!r}")
    return Item(Kind.NAME, line, ports[0], name=domain, tag=tag or None, port_given=bool(port_text))


def parse_line(line: str, ports: Ports) -> Iterator[Parsed]:
    """One line of a list file: CSV when it has a comma, else whitespace-separated targets.

    A bad entry becomes an INVALID item (a record in the output) instead of stopping a scan of a
    million lines.
    """
    text = line.split("#", 1)[0].strip()
    if not text:
        return
    try:
        if "," in text:
            yield parse_csv_line(text, ports)
            return
        for token in text.split():
            yield parse_token(token, ports)
    except UsageError as exc:
        yield Item(Kind.INVALID, text, ports[0], reason=str(exc))


MAX_LIST_LINE = 64 * 1024  # a line of a target list names a few targets


def read_lines(path: str) -> Iterator[str | LongLine]:
    """Lines of a list file, ``-`` for stdin, read lazily (zmap can pipe millions of lines) and
    bounded: an over-long line is a ``LongLine``, a binary input an error."""
    with open_input(path) as stream:
        for line in capped_lines(stream, MAX_LIST_LINE, name=path, what="a target list"):
            yield line if isinstance(line, LongLine) else line.decode("utf-8", errors="replace")


def parse_inputs(args: Iterable[str], lists: Iterable[str], ports: Ports) -> Iterator[Parsed]:
    """Arguments first (bad ones raise ``UsageError`` at once), then each list file in order."""
    for arg in args:
        yield parse_token(arg, ports)
    for path in lists:
        for line in read_lines(path):
            if isinstance(line, LongLine):
                yield Item(Kind.INVALID, f"<a line of {line.length:,} bytes>", ports[0],
                           reason=f"a line longer than {MAX_LIST_LINE // 1024} KB is not a target")
            else:
                yield from parse_line(line, ports)


def validate_args(args: Iterable[str], ports: Ports) -> None:
    """Fail fast on a malformed command-line target, before anything is opened."""
    for arg in args:
        parse_token(arg, ports)


# -- expansion, order, shards ----------------------------------------------------------------


def _digest(*parts: object) -> int:
    text = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def permutation(n: int, seed: int, salt: str) -> Iterator[int]:
    """0..n-1 in a seeded order: ``i -> (a*i + c) mod n`` with ``gcd(a, n) = 1`` (a bijection).

    ``a`` is near ``n/phi`` so consecutive outputs are far apart (different /24s), in O(1)
    memory for any ``n``. Not cryptographic; it only spreads load and makes shards stable.
    """
    if n <= 1:
        yield from range(n)
        return
    h = _digest(seed, salt, n)
    a = int(n * 0.6180339887) + h % max(1, n // 64)
    a = max(1, a % n)
    while math.gcd(a, n) != 1:
        a = a + 1 if a + 1 < n else 1
    c = (h >> 32) % n
    for i in range(n):
        yield (a * i + c) % n


def expand(parsed: Iterable[Parsed], excludes: ExcludeList, seed: int) -> Iterator[Item]:
    """Blocks -> one ADDRESS item per allowed address (seeded order) + one EXCLUDED item per
    excluded part of the block (a whole /8 of private space is one record, not 16 million)."""
    for entry in parsed:
        if isinstance(entry, Item):
            yield entry
            continue
        block = entry.block
        excluded = list(excludes.overlaps(block))
        for part, reason in excluded:
            for port in entry.ports:
                yield Item(Kind.EXCLUDED, entry.given, port, name=entry.name, tag=entry.tag, reason=reason,
                           block=str(part))
        if sum(part.size for part, _ in excluded) == block.size:
            continue
        for offset in permutation(block.size, seed, entry.given):
            value = block.first + offset
            if excluded and excludes.reason(block.version, value) is not None:
                continue
            ip = block.address(value)
            for port in entry.ports:
                yield Item(Kind.ADDRESS, entry.given, port, ip=ip, name=entry.name, tag=entry.tag)


def shard_of(key: str, seed: int, shards: int) -> int:
    return 0 if shards <= 1 else _digest(seed, key) % shards


def in_shard(items: Iterable[Item], seed: int, shards: int, shard: int) -> Iterator[Item]:
    """zmap-style ``--shards N --shard i`` (0-based): every machine computes the same split
    from the same inputs and seed; a name (domain) and all of its MX addresses stay together."""
    if shards <= 1:
        yield from items
        return
    for item in items:
        if shard_of(item.key, seed, shards) == shard:
            yield item


def estimate(args: Iterable[str], lists: Iterable[str], ports: Ports, excludes: ExcludeList) -> int | None:
    """How many records the inputs will give (a name counts once, an excluded range once), for the
    progress ETA; None for stdin."""
    lists = list(lists)
    if "-" in lists:
        return None
    total = 0
    for entry in parse_inputs(args, lists, ports):
        if isinstance(entry, _BlockSpec):
            parts = list(excludes.overlaps(entry.block))
            total += (entry.block.size - sum(part.size for part, _ in parts) + len(parts)) * len(entry.ports)
        elif entry.kind is Kind.NAME and not entry.port_given:
            total += len(ports)
        else:
            total += 1
    return total
