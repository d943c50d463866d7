"""The session log: one JSON line per session in ``sessions.jsonl``, never torn.

Each record is serialised completely first, then written with ONE ``write()`` on a descriptor
opened with ``O_APPEND``, under a lock. Should the disk take only part of it (full disk), the file
is cut back to where the line started, so a reader never sees half a record. When the log passes
``max_bytes`` it is renamed to ``sessions.jsonl.1`` (replacing the previous one) and a new one
starts: at most twice ``max_bytes`` on disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from relaycheck.honeypot.model import SessionRecord

LOG_NAME = "sessions.jsonl"
MAX_LINE = 512 * 1024  # a record longer than this loses its command list, then its transactions


def plain(value: Any) -> Any:
    """A record as JSON-ready data (``dataclasses.asdict`` deep-copies every string: 3x slower)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {key: plain(item) for key, item in vars(value).items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def record_line(record: SessionRecord, extra: dict[str, str] | None = None) -> bytes:
    """The record as one line of JSON (bytes, ending in a newline), at most ``MAX_LINE``."""
    data: dict[str, Any] = plain(record)
    if extra:
        for key, value in extra.items():
            data.setdefault(key, value)  # a --tag never overwrites a field of the record
    line = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8", errors="replace") + b"\n"
    if len(line) > MAX_LINE:
        data["commands_dropped"] += len(data["commands"])
        data["commands"] = []
        data["truncated"] = True
        line = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8", errors="replace") + b"\n"
    while len(line) > MAX_LINE and data["transactions"]:
        data["transactions"].pop()
        data["transactions_dropped"] += 1
        line = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8", errors="replace") + b"\n"
    return line


class SessionLog:
    """Appends records to ``DATA_DIR/sessions.jsonl``; safe to call from several threads."""

    def __init__(self, directory: Path, max_bytes: int = 1 << 30) -> None:
        self.path = directory / LOG_NAME
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fd = self._open()
        self.failed = 0  # records the disk did not take

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, record: SessionRecord, extra: dict[str, str] | None = None) -> bool:
        line = record_line(record, extra)
        with self._lock:
            start = os.fstat(self._fd).st_size
            if start and start + len(line) > self.max_bytes:
                os.close(self._fd)
                os.replace(self.path, self.path.with_name(LOG_NAME + ".1"))
                self._fd = self._open()
                start = 0
            try:
                written = os.write(self._fd, line)
            except OSError:
                written = -1
            if written != len(line):
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)  # no half line: cut back to where it began
                self.failed += 1
                return False
            return True

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


MAX_READ_LINE = MAX_LINE + 1024  # a longer line is not one of ours: skipped


def read_records(directory: Path, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The records in ``directory`` (the rotated log first), oldest first, ended at or after
    ``since``; lines that are not complete JSON objects are skipped."""
    for path in (directory / (LOG_NAME + ".1"), directory / LOG_NAME):
        try:
            file = open(path, "rb")  # noqa: SIM115 (closed below, on every path)
        except FileNotFoundError:
            continue
        with file:
            while line := file.readline(MAX_READ_LINE):
                if not line.endswith(b"\n"):  # too long (or the last line still being written)
                    while line and not line.endswith(b"\n"):
                        line = file.readline(MAX_READ_LINE)
                    continue
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(data, dict) or not isinstance(data.get("end"), str):
                    continue
                if since is not None:
                    try:
                        ended = datetime.fromisoformat(data["end"])
                    except ValueError:
                        continue
                    if ended < since:
                        continue
                yield data
