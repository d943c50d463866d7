"""PURE: host name syntax (RFC 1123 letters-digits-hyphens), shared by target parsing and banners."""

from __future__ import annotations

import re

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)", re.ASCII)


def is_hostname(text: str) -> bool:
    """True for ``mx.example.com`` and ``localhost``; False for ``a..b``, ``-x.y``, escapes, spaces."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))
