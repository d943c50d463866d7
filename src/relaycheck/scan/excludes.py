"""PURE: exclude lists: which addresses a scan must not touch, and why.

The default list is the address policy of ``relaycheck.reach`` (the IANA special-purpose
registries, the list the web service refuses too); users add ``--exclude`` blocks and
``--exclude-file`` files in the same format as zmap/zgrab2 blocklists: one IP, CIDR or range per
line, ``#`` starts a comment (the comment becomes the reason shown in the record). Lookups are a
binary search over disjoint integer intervals, so checking every address of a /8 costs about a
microsecond each.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from relaycheck.boundedio import read_capped
from relaycheck.reach import Exclusion, never_reachable, parse_exclusions, special_purpose
from relaycheck.scan.addresses import Block


def default_rules() -> list[Exclusion]:
    return list(special_purpose())


@dataclass
class _Segments:
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


class ExcludeList:
    """Disjoint intervals per IP version; the first exclusion (by start) covering an address names it."""

    def __init__(self, rules: Iterable[Exclusion] = ()) -> None:
        self.rules = list(rules)
        self._by_version = {4: _Segments(), 6: _Segments()}
        ordered = sorted(self.rules, key=lambda r: (r.block.version, r.block.first, -r.block.last))
        for rule in ordered:
            seg = self._by_version[rule.block.version]
            first, last = rule.block.first, rule.block.last
            if seg.ends and first <= seg.ends[-1]:
                if last <= seg.ends[-1]:
                    continue  # inside the previous segment
                first = seg.ends[-1] + 1
            seg.starts.append(first)
            seg.ends.append(last)
            seg.reasons.append(rule.reason)

    def __len__(self) -> int:
        return len(self.rules)

    def reason(self, version: int, value: int) -> str | None:
        """Why this address is excluded, or None when it may be scanned."""
        seg = self._by_version[version]
        i = bisect.bisect_right(seg.starts, value) - 1
        if i >= 0 and value <= seg.ends[i]:
            return seg.reasons[i]
        return None

    def overlaps(self, block: Block) -> Iterator[tuple[Block, str]]:
        """The parts of ``block`` that are excluded, in order, each with its reason."""
        seg = self._by_version[block.version]
        i = max(0, bisect.bisect_right(seg.starts, block.first) - 1)
        while i < len(seg.starts) and seg.starts[i] <= block.last:
            first, last = max(block.first, seg.starts[i]), min(block.last, seg.ends[i])
            if first <= last:
                yield Block(block.version, first, last), seg.reasons[i]
            i += 1

    def excluded_count(self, block: Block) -> int:
        return sum(part.size for part, _ in self.overlaps(block))


MAX_EXCLUDE_FILE = 64 * 1024 * 1024  # zmap's blocklists are a few hundred KB


def build_excludes(
    *, include_reserved: bool, excludes: Iterable[str] = (), exclude_files: Iterable[str] = ()
) -> ExcludeList:
    """The exclude list a scan uses: IANA defaults (lifted but for the blocks nobody can connect
    to) + ``--exclude`` + files."""
    rules = list(never_reachable()) if include_reserved else default_rules()
    for spec in excludes:
        rules += parse_exclusions(spec, "--exclude")
    for path in exclude_files:
        text = read_capped(path, MAX_EXCLUDE_FILE, what="an exclude list").decode("utf-8", errors="replace")
        rules += parse_exclusions(text, path)
    return ExcludeList(rules)
