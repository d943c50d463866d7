"""``relaycheck honeypot blocklist``: the addresses seen relaying or testing, for a firewall or DNSBL.

An address is listed when, within the window, it sent a relay test or spam through the
honeypot, or tried outside recipients (a relay scanner). Each entry expires one window after its
last sighting (spamd keeps its traps 24 h): a listing ages out by itself once the client stops.
Formats: ``plain`` (one address per line, comments start with ``#``) and ``rbldnsd`` (a
``combined`` dataset with ip4set and ip6trie parts, each entry with its expiry in a comment).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

LISTED = frozenset({"relay-test", "spam-run"})


@dataclass(frozen=True)
class Entry:
    address: str
    last_seen: datetime
    expires: datetime
    reason: str  # the classification of its latest listed session


def _tried_relay(record: dict[str, Any]) -> bool:
    return any(r.get("scope") == "relay" for t in record.get("transactions", []) for r in t.get("recipients", []))


def entries(records: Iterable[dict[str, Any]], window: timedelta) -> list[Entry]:
    latest: dict[str, tuple[datetime, str]] = {}
    for r in records:
        kind = str(r.get("classification", ""))
        if kind not in LISTED and not (kind == "scanner" and _tried_relay(r)):
            continue
        try:
            address = ipaddress.ip_address(str(r.get("client_ip", ""))).compressed
            seen = datetime.fromisoformat(str(r["end"]))
        except (ValueError, KeyError):
            continue
        if address not in latest or seen >= latest[address][0]:
            latest[address] = (seen, "relay-scan" if kind == "scanner" else kind)
    return sorted(
        (Entry(a, seen, seen + window, why) for a, (seen, why) in latest.items()),
        key=lambda e: (ipaddress.ip_address(e.address).version, ipaddress.ip_address(e.address)),
    )


def render_plain(listed: list[Entry], window: timedelta, now: datetime) -> str:
    lines = [
        f"# relaycheck honeypot blocklist, {now.isoformat(timespec='seconds')}: {len(listed)} address(es)",
        f"# seen relaying or testing within {span(window)}; each expires {span(window)} after its last sighting",
    ]
    lines += [e.address for e in listed]
    return "\n".join(lines) + "\n"


def span(window: timedelta) -> str:
    """``24h``, ``7d``, ``90m``: a window as the --since option spells it."""
    seconds = int(window.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _zone_entries(listed: list[Entry]) -> list[str]:
    # The rest of a data line would be the entry's TXT value: the expiry goes on a comment line.
    lines = []
    for e in listed:
        seen, expires = e.last_seen.isoformat(timespec="seconds"), e.expires.isoformat(timespec="seconds")
        lines += [f"# {e.address}: {e.reason}, last seen {seen}, expires {expires}", e.address]
    return lines


def render_rbldnsd(listed: list[Entry], window: timedelta, now: datetime) -> str:
    ttl = max(60, min(int(window.total_seconds()), 86400))
    lines = [
        f"# relaycheck honeypot blocklist for rbldnsd (dataset type 'combined'), {now.isoformat(timespec='seconds')}",
        f"# entries expire {span(window)} after their last sighting; regenerate the zone at least that often",
        f"$TTL {ttl}",
        "$DATASET ip4set @",
        ":127.0.0.2:Listed by relaycheck honeypot: $ was seen relaying or testing for open relays",
    ]
    v4 = [e for e in listed if ipaddress.ip_address(e.address).version == 4]
    v6 = [e for e in listed if ipaddress.ip_address(e.address).version == 6]
    lines += _zone_entries(v4)
    if v6:
        lines += ["$DATASET ip6trie @", ":127.0.0.2:Listed by relaycheck honeypot: $ was seen relaying or testing"]
        lines += _zone_entries(v6)
    return "\n".join(lines) + "\n"


RENDERERS = {"plain": render_plain, "rbldnsd": render_rbldnsd}
