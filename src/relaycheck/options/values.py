"""PURE: what one option value may be. Each function takes the text given on the command line (or
in a form), returns the value the options dataclasses hold, and raises ``ValueError`` with a
message fit to show the user. An entry of the option table names one of these as its ``check``.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from relaycheck import validate
from relaycheck.boundedio import shorten
from relaycheck.dns import split_host_port
from relaycheck.errors import UsageError
from relaycheck.model import Transport


def mail_address(text: str) -> str:
    """``local@domain`` as ``validate.address`` takes it (the one rule; IDN domains converted)."""
    try:
        return validate.address(text, "address")
    except UsageError:
        raise ValueError(f"not a mail address: {shorten(text)!r}") from None


def domain(text: str) -> str:
    """A mail domain as the engine compares it: lower case, no root dot."""
    return text.lower().rstrip(".")


def dnsbl_zone(text: str) -> str:
    return text.lower().strip(".")


def transport(text: str) -> Transport:
    return Transport(text)


def ports(text: str) -> tuple[int, ...]:
    """``25`` or ``25,465,587`` (duplicates dropped, order kept)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    # ASCII digits only: int() also reads "٣" and other scripts' digits, isdigit() also says yes to "²"
    if not all(p.isascii() and p.isdigit() and len(p) <= 5 for p in parts):
        raise ValueError(f"takes port numbers separated by commas, not {text!r}")
    numbers = tuple(int(p) for p in parts)
    if not numbers or not all(0 < p < 65536 for p in numbers):
        raise ValueError(f"takes port numbers from 1 to 65535, not {text!r}")
    return tuple(dict.fromkeys(numbers))


def contact_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.hostname:
        return text
    if parts.scheme == "mailto" and "@" in parts.path:
        return text
    raise ValueError(f"expected an http(s):// or mailto: URL, not {text!r}")


def network(text: str) -> str:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"not an address or network: {text!r}") from None
    return text


def listen(text: str, default_port: int = 8025) -> tuple[str, int]:
    """``HOST:PORT`` to serve on (port 0: any free one; the readiness line names it); loopback and
    ``default_port`` fill in what is missing."""
    any_port = text.endswith(":0")
    try:
        host, port = split_host_port(text[:-2] if any_port else text, default_port=default_port)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    return host or "127.0.0.1", 0 if any_port else port or default_port


def exporter_listen(text: str) -> tuple[str, int]:
    return listen(text, default_port=9925)
