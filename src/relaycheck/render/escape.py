"""PURE: the one way every report makes untrusted text (banners, replies, configuration lines,
host names) safe: for Markdown, for HTML, for a terminal."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

_MD_PUNCT = re.compile(r"([\\`*_\[\]{}|~#!])")


def visible(text: str) -> str:
    """Control characters (terminal escapes from a hostile banner) shown as ``\\xNN``."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else f"\\x{ord(ch):02x}" for ch in text)


def md_text(text: object) -> str:
    """Untrusted text for Markdown running text or a table cell, on one line: control characters
    shown, HTML escaped (Markdown passes raw HTML through), Markdown punctuation escaped."""
    value = " ".join(visible("" if text is None else str(text)).split())
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_PUNCT.sub(r"\\\1", value)


def md_fence(lines: Iterable[str], info: str = "") -> str:
    """A fenced code block that its content cannot close."""
    body = [visible(line) for line in lines]
    longest = max((len(run) for line in body for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([fence + info, *body, fence])


def md_table(header: list[str], rows: Iterable[list[str]], *, escaped: bool = False) -> str:
    """A Markdown table; cells are escaped here unless ``escaped`` says they already are."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell if escaped else md_text(cell) for cell in row) + " |" for row in rows]
    return "\n".join(out)


def html_text(text: object) -> str:
    """Untrusted text for HTML (element content and quoted attributes)."""
    return html.escape(visible("" if text is None else str(text)), quote=True)
