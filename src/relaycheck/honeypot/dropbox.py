"""The drop-box registry: mailboxes that received a spammer's relay test.

A relay test goes to the spammer's own mailbox (the *drop-box*); it turns up again in the
spammer's later runs (as a seed address that proves the run got through). The registry is kept
in ``DATA_DIR/dropboxes.json`` (rewritten atomically), bounded to ``MAX_ENTRIES`` addresses
(the least recently seen go first), and answers which recipients of a session are known.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAX_ENTRIES = 10_000
MAX_LINKS = 20  # relay-test sessions and sources remembered per drop-box
FILE_NAME = "dropboxes.json"
MAX_FILE = 64 * 1024 * 1024


def normalise(address: str) -> str:
    """The mailbox a path names, for comparison: brackets and case dropped."""
    return address.strip().removeprefix("<").removesuffix(">").strip().lower()


@dataclass
class Dropbox:
    address: str
    first_seen: str
    last_seen: str
    sources: list[str] = field(default_factory=list)  # client addresses that tested with it
    tests: list[str] = field(default_factory=list)  # relay-test session ids
    campaigns: list[str] = field(default_factory=list)  # later sessions that included it


class DropboxRegistry:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME
        self.entries: dict[str, Dropbox] = {}
        try:
            with open(self.path, "rb") as file:
                data = json.loads(file.read(MAX_FILE))
            for item in data.get("dropboxes", []):
                box = Dropbox(**item)
                self.entries[box.address] = box
        except (OSError, ValueError, TypeError, AttributeError):
            self.entries = {}  # absent or unreadable: start afresh (the sessions log keeps the history)

    def known(self, address: str) -> Dropbox | None:
        return self.entries.get(normalise(address))

    def add_test(self, address: str, *, session: str, source: str, when: str) -> Dropbox:
        key = normalise(address)
        box = self.entries.pop(key, None) or Dropbox(key, when, when)
        box.last_seen = when
        if source not in box.sources:
            box.sources = [*box.sources, source][-MAX_LINKS:]
        box.tests = [*box.tests, session][-MAX_LINKS:]
        self.entries[key] = box  # most recently seen last
        while len(self.entries) > MAX_ENTRIES:
            del self.entries[next(iter(self.entries))]
        return box

    def add_campaign(self, address: str, *, session: str, when: str) -> Dropbox | None:
        box = self.known(address)
        if box is not None:
            box.last_seen = when
            if session not in box.campaigns:
                box.campaigns = [*box.campaigns, session][-MAX_LINKS:]
        return box

    def save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        data = {"dropboxes": [asdict(b) for b in self.entries.values()]}
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                json.dump(data, file, separators=(",", ":"))
            os.replace(temporary, self.path)
        except OSError:
            temporary.unlink(missing_ok=True)
