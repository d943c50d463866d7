"""PURE: DNS blocklist query names and the meaning of their answers (RFC 5782).

The zones and their return codes are data (``dnsbl_zones.toml``). The lookups themselves are
done elsewhere (dns.py): this module builds the name to ask and turns the answers into a
``DnsblResult``. An answer is only a listing when it is a documented (or plausible) 127.0.0.x
code: ``127.255.255.x`` (query refused, open-resolver block, rate limit), ``127.0.0.1`` and any
address outside 127.0.0.0/8 (an NXDOMAIN-rewriting resolver, a dead zone) make the result
*unknown*, never *listed*: crying wolf on a blocklist sends admins on a useless delisting chase.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from relaycheck.model import DnsblResult

LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")
# Reserved by convention for "this answer is an error, not a listing" (Spamhaus documents
# .252/.254/.255; others follow); applied to every zone.
ERROR_NET = ipaddress.ip_network("127.255.255.0/24")
NOT_A_LISTING = ipaddress.ip_address("127.0.0.1")  # RFC 5782 §5: must not be used as a listing


@dataclass(frozen=True)
class DnsblZone:
    name: str
    title: str
    ipv6: bool  # answers for IPv6 addresses; otherwise they are not queried
    codes: Mapping[str, str] = field(default_factory=dict)  # listing code -> meaning
    errors: Mapping[str, str] = field(default_factory=dict)  # refusal/error code -> meaning
    listed: str = "listed"  # meaning of an undocumented 127.0.0.x answer
    delist: str = ""
    enabled: bool = True  # part of the default set
    defunct: bool = False  # no longer run: answers are not trusted
    note: str = ""


def _zone(entry: Mapping[str, Any]) -> DnsblZone:
    known = {"name", "title", "ipv6", "codes", "errors", "listed", "delist", "enabled", "defunct", "note"}
    unknown = set(entry) - known
    if unknown:
        raise ValueError(f"dnsbl_zones.toml: unknown keys {sorted(unknown)} in zone {entry.get('name')!r}")
    for code in (*entry.get("codes", {}), *entry.get("errors", {})):
        address = ipaddress.ip_address(code)  # raises on a typo in the data file
        if address not in LOOPBACK_NET:
            raise ValueError(f"dnsbl_zones.toml: {entry['name']}: {code} is outside 127.0.0.0/8")
    return DnsblZone(
        name=normalise_zone(str(entry["name"])),
        title=str(entry.get("title", entry["name"])),
        ipv6=bool(entry.get("ipv6", False)),
        codes=dict(entry.get("codes", {})),
        errors=dict(entry.get("errors", {})),
        listed=str(entry.get("listed", "listed")),
        delist=str(entry.get("delist", "")),
        enabled=bool(entry.get("enabled", True)),
        defunct=bool(entry.get("defunct", False)),
        note=str(entry.get("note", "")),
    )


@cache
def all_zones() -> tuple[DnsblZone, ...]:
    """Every zone described in the data file, including those kept out of the defaults."""
    text = resources.files("relaycheck").joinpath("dnsbl_zones.toml").read_text(encoding="utf-8")
    return tuple(_zone(entry) for entry in tomllib.loads(text).get("zone", []))


def load_zones() -> tuple[DnsblZone, ...]:
    """The zones checked unless the user says otherwise (``enabled`` in the data file)."""
    return tuple(z for z in all_zones() if z.enabled)


def zone_info(zone: str) -> DnsblZone:
    """The data for ``zone``; a zone the user added (``--dnsbl-zone``) gets generic meanings.

    Unknown zones are asked for IPv6 addresses too: a zone without IPv6 data just answers
    NXDOMAIN, which costs one query and cannot produce a false listing.
    """
    wanted = normalise_zone(zone)
    for known in all_zones():
        if known.name == wanted:
            return known
    return DnsblZone(name=wanted, title=wanted, ipv6=True)


def normalise_zone(zone: str) -> str:
    return zone.strip().rstrip(".").lower()


def query_name(ip: str, zone: str) -> str:
    """The name to look up: reversed IPv4 octets, or reversed IPv6 nibbles, then the zone.

    ``192.0.2.1`` -> ``1.2.0.192.zone``; ``2001:db8::1`` -> ``1.0.0.0.…8.b.d.0.1.0.0.2.zone``
    (32 nibbles, RFC 5782 §2.4). An IPv4-mapped IPv6 address is queried as the IPv4 address
    it carries. Raises ``ValueError`` for anything that is not an IP address.
    """
    address = ipaddress.ip_address(ip.strip().strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        labels = reversed(str(address).split("."))
    else:
        labels = reversed(address.exploded.replace(":", ""))
    return ".".join(labels) + "." + normalise_zone(zone)


def interpret(zone: str, answers: Sequence[str], txt: str | None) -> DnsblResult:
    """What the A answers (and TXT, if fetched) for one address in ``zone`` mean.

    ``answers`` empty means NXDOMAIN / no data: not listed. Listing codes win over error codes
    when a zone returns both (it did list the address).
    """
    info = zone_info(zone)
    codes = tuple(a.strip() for a in answers if a.strip())
    if not codes:
        return DnsblResult(info.name, False, (), "not listed", txt)
    parsed: list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None]] = []
    for code in codes:
        try:
            parsed.append((code, ipaddress.ip_address(code)))
        except ValueError:
            parsed.append((code, None))
    if info.defunct:
        meaning = f"{info.title}: the zone is no longer run, its answer is not trusted"
        return DnsblResult(info.name, None, codes, meaning, txt)
    foreign = [code for code, address in parsed if address is None or address not in LOOPBACK_NET]
    if foreign:
        return DnsblResult(
            info.name,
            None,
            codes,
            f"unexpected answer {', '.join(foreign)} (outside 127.0.0.0/8): a resolver rewriting NXDOMAIN or a "
            "zone that is not a blocklist; not counted as a listing",
            txt,
        )
    listings = [(c, a) for c, a in parsed if a is not None and _is_listing(info, c, a)]
    if listings:
        meanings = [f"{c}: {info.codes.get(c, info.listed)}" for c, _ in listings]
        return DnsblResult(info.name, True, codes, "; ".join(meanings), txt)
    errors = [f"{c}: {info.errors.get(c, _generic_error(a))}" for c, a in parsed if a is not None]
    return DnsblResult(info.name, None, codes, "; ".join(errors), txt)


def _is_listing(info: DnsblZone, code: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if code in info.errors or address in ERROR_NET or address == NOT_A_LISTING:
        return False
    return isinstance(address, ipaddress.IPv4Address)


def _generic_error(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
    if address == NOT_A_LISTING:
        return "127.0.0.1 is never a listing (RFC 5782): the zone reports an error"
    return "query refused or in error (127.255.255.x): the zone did not say whether the address is listed"
