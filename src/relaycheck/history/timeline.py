"""A target's runs as a timeline with the changes marked (pure: stored rows in, entries out).

Used by ``relaycheck history`` and the web UI's timeline page, so both mark the same changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from relaycheck.history.changes import Change, diff
from relaycheck.history.store import DONE, CheckRow


@dataclass(frozen=True)
class Entry:
    row: CheckRow
    changes: tuple[Change, ...]  # against the finished run before it (empty for the first one)
    first: bool  # no finished run before it in this window

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def created(self) -> datetime:
        return self.row.created


def timeline(rows: Sequence[CheckRow], before: CheckRow | None = None) -> list[Entry]:
    """``rows`` newest first, with reports; ``before``: the finished run just older than the
    oldest row (so the oldest row of a page is compared too). Newest first out."""
    entries: list[Entry] = []
    previous = before
    for row in sorted(rows, key=lambda r: r.created):
        if row.status != DONE or row.report is None:
            entries.append(Entry(row, (), previous is None))
            continue
        changes = tuple(diff(previous.report if previous else None, row.report))
        entries.append(Entry(row, changes, previous is None))
        previous = row
    return entries[::-1]
