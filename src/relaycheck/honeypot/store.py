"""Raw messages, content-addressed (``messages/ab/abcdef….eml`` by SHA-256) under a disk quota.

When a new message would pass the quota, the oldest bodies are deleted first; the session
records that describe them stay (their ``stored`` flag tells what was kept at the time). A
message larger than the whole quota is not stored at all.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path


class MessageStore:
    def __init__(self, directory: Path, quota_bytes: int) -> None:
        self.root = directory / "messages"
        self.root.mkdir(parents=True, exist_ok=True)
        self.quota = quota_bytes
        self._lock = threading.Lock()
        self._files: OrderedDict[str, int] = OrderedDict()  # sha256 -> size, oldest first
        self.used = 0
        self.pruned = 0
        found = []
        for path in self.root.glob("??/*.eml"):
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((stat.st_mtime, path.stem, stat.st_size))
        for _, digest, size in sorted(found):
            self._files[digest] = size
            self.used += size
        for leftover in self.root.glob("??/*.tmp"):  # a write cut short by a crash
            leftover.unlink(missing_ok=True)

    def path_of(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.eml"

    def put(self, digest: str, raw: bytes) -> bool:
        """Keep ``raw`` (whose SHA-256 is ``digest``); False when it cannot fit the quota."""
        size = len(raw)
        if size > self.quota:
            return False
        with self._lock:
            if digest in self._files:
                self._files.move_to_end(digest)
                return True
            while self._files and self.used + size > self.quota:
                old, old_size = self._files.popitem(last=False)
                self.path_of(old).unlink(missing_ok=True)
                self.used -= old_size
                self.pruned += 1
            target = self.path_of(digest)
            target.parent.mkdir(exist_ok=True)
            temporary = target.with_suffix(".tmp")
            try:
                with open(temporary, "wb") as file:
                    file.write(raw)
                os.replace(temporary, target)
            except OSError:
                temporary.unlink(missing_ok=True)
                return False
            self._files[digest] = size
            self.used += size
            return True
