"""PURE: which catalogue probe an envelope someone sent *us* looks like.

The tester fills the catalogue's templates to build relay attempts; this module reads them the
other way round, so the honeypot names the relay trick a client used with the very same data:
every template becomes a pattern (its named slots turned into capture groups), and an envelope
is matched against the MAIL and RCPT templates of each entry. Slots that name the server itself
(``{local_domain}``, ``{host}``, ``{ip_literal}``) match only the names and address literals the
receiving server answers to; ``{ext}`` matches only a domain that is not one of them.
"""

from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass
from enum import StrEnum

from relaycheck.catalogue import ProbeSpec, load_catalogue
from relaycheck.model import ProbeKind

_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})\.)*[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})\.?"
_LITERAL = r"\[[^\[\]\s]{1,80}\]"
_LOCAL = r"[^\s<>@%!:\"]{1,128}"
# What each slot may be in a received address. Slots bound to the server are checked against its
# names after the match (``_bound``), so a pattern stays a fixed regex per template.
_SLOT_PATTERNS: dict[str, str] = {
    "u": _LOCAL,
    "s": _LOCAL,
    "random_user": _LOCAL,
    "ext": f"(?:{_DOMAIN}|{_LITERAL})",
    "sender_domain": _DOMAIN,
    "sender_ext": f"{_LOCAL}@(?:{_DOMAIN}|{_LITERAL})",
    "local_domain": _DOMAIN,
    "host": _DOMAIN,
    "ip_literal": _LITERAL,
}
_SELF_SLOTS = ("local_domain", "host", "ip_literal")


class Scope(StrEnum):
    """Where a recipient would go if the server obeyed it."""

    LOCAL = "local"  # one of the server's own mailboxes
    RELAY = "relay"  # somewhere else: accepting it is relaying
    INVALID = "invalid"  # not an address at all


@dataclass(frozen=True)
class ServerNames:
    """The names and address literals a receiving server answers to (all lower case)."""

    domains: frozenset[str]
    literals: frozenset[str]  # "[192.0.2.1]", "[ipv6:2001:db8::1]"

    def is_local(self, domain: str) -> bool:
        d = domain.lower().rstrip(".")
        return d in self.domains or d in self.literals


@dataclass(frozen=True)
class RecipientAnalysis:
    """One RCPT read like the tester would have written it."""

    path: str  # the path as sent, ESMTP parameters removed
    scope: Scope
    probe_id: str | None  # the catalogue entry the envelope matches, if any
    family: str | None  # that entry's title: the relay trick's name
    outside_domain: str | None  # where the trick would take the message


def envelope_path(argument: str) -> str:
    """The path of a MAIL FROM:/RCPT TO: argument, without its ESMTP parameters."""
    text = argument.strip()
    if text.startswith("<") and ">" in text:
        return text[: text.rindex(">") + 1]
    return text.split(" ", 1)[0]


def _fields(template: str) -> list[tuple[str, str | None]]:
    return [(literal, name) for literal, name, _, _ in string.Formatter().parse(template)]


@dataclass(frozen=True)
class _Compiled:
    spec: ProbeSpec
    regex: re.Pattern[str]
    specificity: int


def _compile(spec: ProbeSpec, templates: tuple[str, ...]) -> _Compiled:
    seen: set[str] = set()
    parts: list[str] = []
    specificity = 0
    for template in templates:
        for literal, name in _fields(template):
            parts.append(re.escape(literal))
            specificity += len(literal)
            if name is None:
                continue
            if name in seen:  # the same value again (V02: sender and recipient share {ext})
                parts.append(f"(?P={name})")
                specificity += 3
            else:
                seen.add(name)
                parts.append(f"(?P<{name}>{_SLOT_PATTERNS[name]})")
                specificity += 3 if name in _SELF_SLOTS else 0
        parts.append("\n")
    return _Compiled(spec, re.compile("".join(parts[:-1]), re.IGNORECASE), specificity)


@functools.cache
def _compiled_catalogue() -> tuple[tuple[_Compiled, ...], tuple[_Compiled, ...]]:
    """The relay entries as (MAIL, RCPT) patterns, then as RCPT-only patterns; most specific first
    (V02, a sender in the recipient's own domain, before V01, any sender)."""
    relay = [s for s in load_catalogue() if s.kind is ProbeKind.RELAY]
    pairs = sorted((_compile(s, (s.mail, s.rcpt)) for s in relay), key=lambda c: -c.specificity)
    alone = sorted((_compile(s, (s.rcpt,)) for s in relay), key=lambda c: -c.specificity)
    return tuple(pairs), tuple(alone)


def _bound(match: re.Match[str], names: ServerNames) -> bool:
    """The slots naming the server name it, and ``{ext}`` names somewhere else."""
    groups = match.groupdict()
    for slot in _SELF_SLOTS:
        if groups.get(slot) is not None and not names.is_local(groups[slot]):
            return False
    ext = groups.get("ext")
    return ext is None or not names.is_local(ext)


def _final_domain(path: str) -> str | None:
    text = path.strip().removeprefix("<").removesuffix(">")
    if text.startswith("@") and ":" in text:  # source route: the route is ignored (RFC 5321)
        text = text.split(":", 1)[1]
    _local, at, domain = text.rpartition("@")
    if not at:
        return None
    return domain


def analyse_recipient(mail_argument: str, rcpt_argument: str, names: ServerNames) -> RecipientAnalysis:
    """Read one recipient in its transaction, as the catalogue would have built it."""
    mail, rcpt = envelope_path(mail_argument), envelope_path(rcpt_argument)
    pairs, alone = _compiled_catalogue()
    # The whole envelope first; a trick in the recipient counts whoever the sender claims to be.
    for entries, text in ((pairs, f"{mail}\n{rcpt}"), (alone, rcpt)):
        for entry in entries:
            match = entry.regex.fullmatch(text)
            if match is None or not _bound(match, names):
                continue
            return RecipientAnalysis(
                path=rcpt,
                scope=Scope.RELAY,
                probe_id=entry.spec.id,
                family=entry.spec.title,
                outside_domain=match.groupdict().get("ext"),
            )
    domain = _final_domain(rcpt)
    if not rcpt.strip("<>") or any(c in rcpt for c in "\r\n\0"):
        scope = Scope.INVALID
    elif domain is None or names.is_local(domain) or not domain:
        scope = Scope.LOCAL
    else:
        scope = Scope.RELAY
    outside = domain if scope is Scope.RELAY else None
    return RecipientAnalysis(path=rcpt, scope=scope, probe_id=None, family=None, outside_domain=outside)
