"""PURE: exclude lists: which addresses a scan must not touch, and why.

The default list is the IANA special-purpose registries (``iana-special-purpose.txt``, shipped
as package data); users add ``--exclude`` blocks and ``--exclude-file`` files in the same
format as zmap/zgrab2 blocklists: one IP, CIDR or range per line, ``#`` starts a comment (the
comment becomes the reason shown in the record). Lookups are a binary search over disjoint
integer intervals, so checking every address of a /8 costs about a microsecond each.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources

from relaycheck.boundedio import read_capped
from relaycheck.errors import UsageError
from relaycheck.scan.addresses import Block, parse_block

DEFAULT_LIST = "iana-special-purpose.txt"


@dataclass(frozen=True, slots=True)
class Rule:
    block: Block
    reason: str


def parse_rules(text: str, source: str) -> list[Rule]:
    """Rules from exclude-file text; ``UsageError`` names the file and line of a bad entry."""
    rules: list[Rule] = []
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
            rules.append(Rule(block, comment.strip() or f"listed in {source}"))
    return rules


def default_rules() -> list[Rule]:
    text = resources.files("relaycheck.scan").joinpath(DEFAULT_LIST).read_text(encoding="utf-8")
    return parse_rules(text, DEFAULT_LIST)


@dataclass
class _Segments:
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


class ExcludeList:
    """Disjoint intervals per IP version; the first rule (by start) covering an address names it."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
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
    """The exclude list a scan uses: IANA defaults (unless lifted) + ``--exclude`` + files."""
    rules = [] if include_reserved else default_rules()
    for spec in excludes:
        rules += parse_rules(spec, "--exclude")
    for path in exclude_files:
        text = read_capped(path, MAX_EXCLUDE_FILE, what="an exclude list").decode("utf-8", errors="replace")
        rules += parse_rules(text, path)
    return ExcludeList(rules)
