"""PURE: how to fix each finding, for the MTA family that was detected (texts in ``fixes.toml``).

``fix_for(code, family)`` returns the family's own text when there is one, else the generic
text, else ``None`` for a code without remediation. Texts follow one layout convention (see the
head of ``fixes.toml``): paragraphs separated by blank lines, command/configuration lines
indented by four spaces; ``blocks`` splits a text along it for renderers.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from relaycheck.fingerprint import FAMILY_NAMES, UNKNOWN

GENERIC = "generic"
FAMILIES = frozenset(FAMILY_NAMES) - {UNKNOWN}
_KEYS = FAMILIES | {GENERIC, "see"}


@dataclass(frozen=True)
class Remedy:
    """The texts for one finding code."""

    code: str
    generic: str
    by_family: dict[str, str]
    see: str | None = None  # another code whose family texts also apply


@cache
def load_texts() -> dict[str, Remedy]:
    raw = resources.files("relaycheck.findings").joinpath("fixes.toml").read_text(encoding="utf-8")
    remedies: dict[str, Remedy] = {}
    for code, table in tomllib.loads(raw).items():
        if not isinstance(table, dict):
            raise ValueError(f"findings/fixes.toml: [{code}] must be a table")
        unknown = set(table) - _KEYS
        if unknown:
            raise ValueError(f"findings/fixes.toml: [{code}] has unknown keys {sorted(unknown)}")
        if not str(table.get(GENERIC, "")).strip():
            raise ValueError(f"findings/fixes.toml: [{code}] needs a generic text")
        remedies[code] = Remedy(
            code=code,
            generic=_clean(table[GENERIC]),
            by_family={k: _clean(v) for k, v in table.items() if k in FAMILIES},
            see=table.get("see"),
        )
    for remedy in remedies.values():
        if remedy.see is not None and remedy.see not in remedies:
            raise ValueError(f"findings/fixes.toml: [{remedy.code}] sees unknown code {remedy.see!r}")
    return remedies


def fix_for(code: str, family: str) -> str | None:
    """The fix for finding ``code`` on an MTA of ``family`` (``unknown`` or any other: generic)."""
    remedy = load_texts().get(code)
    if remedy is None:
        return None
    wanted = family.lower()
    if wanted in remedy.by_family:
        return remedy.by_family[wanted]
    if remedy.see is not None:
        referred = load_texts()[remedy.see]
        if wanted in referred.by_family:
            return referred.by_family[wanted]
    return remedy.generic


def codes_with_texts() -> frozenset[str]:
    return frozenset(load_texts())


@dataclass(frozen=True)
class Block:
    """A piece of a remediation text: prose, or verbatim command/configuration lines."""

    verbatim: bool
    text: str


def blocks(text: str) -> list[Block]:
    """Split a remediation text into prose paragraphs and verbatim blocks (4-space indent)."""
    result: list[Block] = []
    prose: list[str] = []
    code: list[str] = []

    def flush_prose() -> None:
        if prose:
            result.append(Block(False, " ".join(line.strip() for line in prose)))
            prose.clear()

    def flush_code() -> None:
        if code:
            result.append(Block(True, "\n".join(code)))
            code.clear()

    for line in text.splitlines():
        if line.startswith("    ") and line.strip():
            flush_prose()
            code.append(line[4:])
        elif not line.strip():
            flush_prose()
            flush_code()
        else:
            flush_code()
            if prose and _starts_item(line):
                flush_prose()
            prose.append(line)
    flush_prose()
    flush_code()
    return result


def _starts_item(line: str) -> bool:
    """Numbered steps ("1. …") stay separate paragraphs even without a blank line between."""
    head = line.lstrip().split(" ", 1)[0]
    return head[:-1].isdigit() and head.endswith(".")


def _clean(text: str) -> str:
    return text.strip("\n").rstrip()
