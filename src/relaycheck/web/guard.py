"""The SSRF guard: which inputs the web service accepts and which addresses it will connect to.

A public relay tester is a machine that opens TCP connections on request, so the request must
not be able to point it inward. The rules (docs/web.md, "Security controls"):

- resolve once (MX, then A/AAAA) and vet every address; the engine is then given the vetted
  *address*, never the name, so a second DNS answer (rebinding) cannot change where we connect;
- only globally routable unicast addresses, unless the operator allows private ones for a lab:
  the one address policy of ``relaycheck.reach`` (the IANA special-purpose blocks, the same
  list a scan excludes by default; IPv6 addresses that carry an IPv4 address are judged by it);
- ports from an allow-list (25, 465, 587 by default);
- host names must be real DNS names: at least one dot, and not an all-numeric last label
  (``127.1``, ``2130706433`` and ``0x7f000001`` are address tricks, not names).

MX records are attacker-controlled DNS, so an MX pointing at 127.0.0.1 is refused like the
address itself. An MX host whose addresses are refused is reported as not tested; the others
are still tested.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from relaycheck.api import CheckOptions, TargetSpec, expand, parse_target
from relaycheck.dns import is_ip
from relaycheck.errors import DnsError, UsageError
from relaycheck.model import InputProblem, Target
from relaycheck.reach import refusal

__all__ = ["Plan", "Refused", "check_name", "parse_input", "refusal", "resolve", "target_key"]

class Refused(UsageError):
    """The input is well-formed but the service will not test it (address class, port, name)."""


def _numeric_label(label: str) -> bool:
    return label.isdigit() or label.lower().startswith("0x")


def check_name(spec: TargetSpec, *, allow_private: bool) -> None:
    """Refuse names that are address tricks or local-only names (before any lookup)."""
    if is_ip(spec.host):
        return
    last = spec.host.rsplit(".", 1)[-1]
    if _numeric_label(last):
        raise Refused(f"{spec.given!r} is not a domain name (numeric top-level label): give a name or an IP address")
    if not allow_private and "." not in spec.host:
        raise Refused(f"{spec.host!r} is not a full domain name: give the mail domain or the server's full name")


@dataclass(frozen=True)
class Plan:
    """What one web check will test: vetted targets (address set), and what was left out."""

    spec: TargetSpec
    port: int
    targets: tuple[Target, ...]
    problems: tuple[InputProblem, ...]

    @property
    def key(self) -> str:
        return address_key(self.targets)

    @property
    def endpoints(self) -> tuple[tuple[str, int], ...]:
        return tuple(endpoint(t) for t in self.targets)


KEY_CAP = 300  # the stored key's column width


def target_key(host: str, port: int) -> str:
    """``host:port`` (``[v6]:port``) for one address or name."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def canonical_address(address: str) -> str:
    """One spelling per address: IPv4-mapped IPv6 (``::ffff:192.0.2.1``) is the IPv4 address,
    IPv6 is compressed and lower case. Anything that is not an address is returned as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def endpoint(target: Target) -> tuple[str, int]:
    return canonical_address(target.address or target.host), target.port


def address_key(targets: Iterable[Target]) -> str:
    """The identity of a check for cooldown, dedup and history: the resolved addresses and port.

    Names are not part of it: aliases, wildcard names and other spellings of one server's
    address share one cooldown and one history. A check of several addresses (the MX hosts of
    a domain) is keyed by all of them, sorted; a key longer than the column is shortened with
    a digest so that it stays unique.
    """
    key = " ".join(sorted({target_key(*endpoint(t)) for t in targets}))
    if len(key) <= KEY_CAP:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[: KEY_CAP - 20]}… {digest}"


# -- what people paste into the box ---------------------------------------------------------

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def understand(text: str) -> str:
    """The host (and port) in what a user pasted: a URL, an e-mail address, ``mailto:``.

    ``https://mail.example.com/x`` → ``mail.example.com``; ``smtp://mx.example.com:587`` keeps
    its port; ``Postmaster <pm@example.com>`` and ``mailto:pm@example.com`` → ``example.com``
    (the mail domain: its MX hosts are tested). Anything else is returned stripped.
    """
    text = text.strip().strip("<>\"' ").strip()
    if "<" in text and text.endswith(">"):  # "Name <user@domain>"
        text = text[text.rindex("<") + 1 : -1].strip()
    if text.lower().startswith("mailto:"):
        text = text[7:].split("?", 1)[0]
    if _SCHEME.match(text):
        parts = urlsplit(text)
        netloc = parts.netloc.rpartition("@")[2]  # drop user:password@
        return netloc or text
    if "@" in text and "/" not in text:
        return text.rpartition("@")[2].strip()
    if "/" in text and not text.startswith("["):  # "example.com/path" without a scheme
        return text.split("/", 1)[0]
    return text


def to_ascii(host: str) -> str:
    """The A-label form of an internationalised name (``bücher.de`` → ``xn--bcher-kva.de``).

    Python's IDNA codec (IDNA 2003, with nameprep: the form every resolver accepts for the
    common names). Raises ``UsageError`` for a name it cannot encode.
    """
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UsageError(f"{host!r} is not a valid internationalised domain name") from None


def to_unicode(host: str) -> str:
    """The U-label form of a name for people (``xn--bcher-kva.de`` → ``bücher.de``)."""
    if "xn--" not in host.lower():
        return host
    try:
        return host.encode("ascii").decode("idna")
    except UnicodeError:
        return host


def _split_for_idna(text: str) -> str:
    """Encode the host part of ``host`` or ``host:port`` to A-labels (IP literals untouched)."""
    if text.isascii():
        return text
    host, colon, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    return to_ascii(host.rstrip(".").lower()) + (colon + port if colon else "")


def parse_input(text: str, port: int | None, *, ports: Iterable[int], allow_private: bool) -> tuple[TargetSpec, int]:
    """Parse a user's input (``domain``, ``host``, ``host:port``, ``IP``, ``[IPv6]:port``).

    A port written in the input wins over ``port``. Raises ``UsageError`` (malformed) or
    ``Refused`` (port not allowed, address-trick name). IP literals are vetted at once.
    """
    text = understand(text)
    if len(text) > 255:
        raise UsageError("that is too long for a host or domain name")
    spec = replace(parse_target(_split_for_idna(text)), given=text)
    chosen = spec.port or port or 25
    allowed = sorted(set(ports))
    if chosen not in allowed:
        listed = ", ".join(map(str, allowed))
        raise Refused(f"port {chosen} is not tested by this service (allowed: {listed})")
    check_name(spec, allow_private=allow_private)
    if is_ip(spec.host):
        why = refusal(spec.host, allow_private=allow_private)
        if why:
            scope = "nobody can connect to it" if allow_private else "this service tests public mail servers only"
            raise Refused(f"{why}: {scope}")
    return spec, chosen


async def resolve(
    spec: TargetSpec,
    port: int,
    *,
    resolver: str | None,
    allow_private: bool,
    max_targets: int,
    timeout: float = 20.0,
) -> Plan:
    """Resolve once (MX, then A/AAAA), vet every address; raise ``Refused`` when nothing is left.

    The returned targets carry the vetted address in ``Target.address``: the engine connects to
    it and never looks the name up again.
    """
    options = CheckOptions(resolver=resolver, port=port, use_mx=True)
    try:
        async with asyncio.timeout(timeout):
            expanded = await expand(spec, options)
    except TimeoutError:
        raise DnsError(f"DNS lookups for {spec.host} took longer than {timeout:g} s") from None
    kept: list[Target] = []
    problems: list[InputProblem] = []
    seen: set[tuple[str | None, int]] = set()
    for found in expanded:
        # one spelling per address, so that the engine, the cooldown and the history agree
        target = replace(found, address=canonical_address(found.address or found.host))
        if (target.address, target.port) in seen:
            continue
        seen.add((target.address, target.port))
        why = refusal(found.address or "", allow_private=allow_private)
        if why:
            problems.append(InputProblem(target.host, f"not tested: {why}"))
        elif len(kept) >= max_targets:
            problems.append(
                InputProblem(target.host, f"not tested: more than {max_targets} addresses ({target.address})")
            )
        else:
            kept.append(target)
    if not kept:
        reasons = "; ".join(f"{p.given}: {p.problem.removeprefix('not tested: ')}" for p in problems)
        raise Refused(f"nothing to test for {spec.host}: {reasons}")
    return Plan(spec=spec, port=port, targets=tuple(kept), problems=tuple(problems))


async def history_keys(text: str, port: int, *, resolver: str | None, max_targets: int) -> tuple[str, ...]:
    """The keys whose history a reader asks for with ``text`` (a name, address, URL…) and ``port``:
    first the resolved addresses (the key of checks started from the web), then the name as given
    with its port (the key of ``relaycheck watch`` runs, which follow a name through address changes).

    Names are resolved as a check would resolve them, so every name of one server finds the same
    history. Reading history connects nowhere, so any address and port may be asked about; what
    cannot be resolved, or could never be tested, gets a key that no check has (an empty
    history). Raises ``UsageError`` for input that is not a target at all.
    """
    try:
        spec, chosen = parse_input(text, port, ports=range(1, 65536), allow_private=True)
    except Refused:  # an address nobody can connect to, an address-trick name: never tested
        return (text.strip()[:255],)
    named = target_key(spec.host, chosen)
    try:
        plan = await resolve(spec, chosen, resolver=resolver, allow_private=True, max_targets=max_targets)
    except (UsageError, DnsError):
        return (named,)
    return tuple(dict.fromkeys((plan.key, named)))
