"""PURE: spans of time as people type them on a command line (``90s``, ``15m``, ``24h``, ``7d``,
``2w``, ``1h30m``; a bare number is seconds), for every option that takes one."""

from __future__ import annotations

import re

from relaycheck.errors import UsageError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NUMBER = r"\d{1,9}(?:\.\d{1,6})?"
_WHOLE = re.compile(rf"(?:{_NUMBER}[smhdw])+|{_NUMBER}")  # a bare number only alone: 1h30 is not 1h + 30 s
_PART = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)([smhdw]?)")


def seconds(text: str, option: str) -> float:
    """``text`` in seconds; ``UsageError`` naming ``option`` when it is not a span of time."""
    cleaned = text.strip()
    if not _WHOLE.fullmatch(cleaned):
        raise UsageError(f"{option} takes a span of time such as 90s, 15m, 24h, 7d or 2w, not {cleaned[:40]!r}")
    return sum(float(number) * UNITS[unit or "s"] for number, unit in _PART.findall(cleaned))
