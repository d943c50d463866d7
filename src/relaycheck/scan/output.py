"""The JSON Lines output: one record per line, appended, flushed per record, resumable.

Guarantees (what ``--resume`` relies on):

- each record is one ``write(2)`` of one complete line on a file opened ``O_APPEND``, so a
  killed scan leaves whole lines plus, at worst, one torn last line (a crash inside the write);
- on resume the torn tail is cut off (its target is scanned again) and every key already in the
  file is skipped, so no record is lost and none is written twice;
- a key is written at most once per file: duplicates (the same address given twice, a Dask
  chunk recomputed after a worker died) are dropped here, at the one place that writes;
- an exclusive ``flock`` stops two scans from appending to the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections import Counter
from typing import Any, BinaryIO

from relaycheck.errors import UsageError

FSYNC_EVERY = 1.0  # seconds: per-line fsync would cost more than the scan; a kill loses nothing anyway


class JsonlOutput:
    def __init__(self, path: str, *, resume: bool = False) -> None:
        self.path = path
        self.keys: set[str] = set()  # written, or claimed by a test in flight
        self._pending: set[str] = set()  # claimed, not written yet
        self.by_status: Counter[str] = Counter()
        self.by_verdict: Counter[str] = Counter()
        self.open_found = 0
        self.resumed = 0  # records found in the file when resuming
        self.torn_bytes = 0  # bytes of a torn last line cut off when resuming
        self.written = 0
        self.duplicates = 0
        self._names: dict[str, set[str]] | None = None
        self._last_sync = time.monotonic()
        self._stdout: BinaryIO | None = None
        self._fd = -1
        if path == "-":
            if resume:
                raise UsageError("--resume needs an output file (-o FILE), not stdout")
            self._stdout = sys.stdout.buffer
            return
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND
        try:
            self._fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot open {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise UsageError(f"another relaycheck scan is writing {path}") from None
        size = os.fstat(self._fd).st_size
        if size and not resume:
            os.close(self._fd)
            raise UsageError(f"{path} already has results: add --resume to continue that scan, or remove it")
        if size:
            self._load()

    # -- resume ------------------------------------------------------------------------------

    def _load(self) -> None:
        good_end = 0
        with open(self.path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.endswith(b"\n"):
                    break  # torn: the scan died inside this write; its target is scanned again
                good_end += len(line)
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    key = record["key"]
                except (ValueError, KeyError, TypeError):
                    raise UsageError(
                        f"{self.path}:{number} is not a relaycheck scan record; refusing to resume into it"
                    ) from None
                if key in self.keys:
                    continue
                self.keys.add(key)
                self._count(record)
                self.resumed += 1
        size = os.fstat(self._fd).st_size
        if good_end < size:
            self.torn_bytes = size - good_end
            os.ftruncate(self._fd, good_end)  # O_APPEND: the next write starts at the new end

    def keys_for_name(self, name: str) -> set[str]:
        """Keys already written for one input name (its MX addresses), for remote chunks."""
        if self._names is None:
            self._names = {}
            for key in self.keys:
                if written_for := _name_of(key):
                    self._names.setdefault(written_for, set()).add(key)
        return self._names.get(name, set())

    # -- writing -----------------------------------------------------------------------------

    def claim(self, key: str) -> bool:
        """Reserve ``key`` for a test about to start; False when it is written or in flight."""
        if key in self.keys:
            return False
        self.keys.add(key)
        self._pending.add(key)
        return True

    def is_pending(self, key: str) -> bool:
        return key in self._pending

    def release(self, key: str) -> None:
        """A claimed test was abandoned (the scan stopped): resume will do it."""
        if key in self._pending:
            self._pending.discard(key)
            self.keys.discard(key)

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record; False (nothing written) when its key is already in the file."""
        key = record["key"]
        if key in self._pending:
            self._pending.discard(key)
        elif key in self.keys:
            self.duplicates += 1
            return False
        else:
            self.keys.add(key)
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        if self._stdout is not None:
            self._stdout.write(line)
            self._stdout.flush()
        else:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            if time.monotonic() - self._last_sync > FSYNC_EVERY:
                os.fsync(self._fd)
                self._last_sync = time.monotonic()
        self.written += 1
        self._count(record)
        if self._names is not None and (written_for := _name_of(key)):
            self._names.setdefault(written_for, set()).add(key)
        return True

    def _count(self, record: dict[str, Any]) -> None:
        self.by_status[str(record.get("status"))] += 1
        verdict = record.get("verdict")
        if verdict is not None:
            self.by_verdict[str(verdict)] += 1
            if verdict == "open":
                self.open_found += 1

    @property
    def total(self) -> int:
        return self.resumed + self.written

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)  # releases the flock
            self._fd = -1

    def __enter__(self) -> JsonlOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _name_of(key: str) -> str:
    """The input name in a record key (``ip|port|name``); "" for none, and for the keys of invalid
    inputs (``!line``), which have no fields at all."""
    _, separator, name = key.rpartition("|")
    return name if separator else ""
