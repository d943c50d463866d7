"""PURE: what a session was (relay test, spam run, scanner, credential attack) and who ran it.

A spammer's *relay test* is a message to one of its own mailboxes that carries the relay's
address (dotted, or as 8 hex digits such as ``C0A80005``, often with the port) or name in the
subject or body, so that the spammer's harvester learns which relay worked. A *spam run* sends to
outside recipients without that mark. A *scanner* never completes a message (or sends only a
tool's own probe); the tool is named when its EHLO name, addresses or behaviour are its own
(``TOOLS``). The rules are small named functions applied in order; the first that holds decides.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from relaycheck.honeypot.model import Classification, MessageFacts, SessionRecord

RELAY_TEST_MAX_RECIPIENTS = 5  # a relay test goes to the spammer's own one or few mailboxes
RELAYCHECK_TRICKS = 4  # distinct catalogue probes in one session: a relay tester at work


@dataclass(frozen=True)
class Identity:
    """What the honeypot is called and where it was reached."""

    addresses: tuple[str, ...]  # IP addresses (the one the client connected to first)
    hostnames: tuple[str, ...]
    port: int | None = None


def _ip_forms(address: str, port: int | None) -> list[tuple[str, re.Pattern[str]]]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return []
    forms: list[tuple[str, re.Pattern[str]]] = []
    text = ip.compressed
    after = r"(?![\w:])" if ip.version == 6 else r"(?!\w|\.\d)"  # "192.0.2.1:25" still counts
    forms.append((f"address {text}", re.compile(rf"(?<![\w.:]){re.escape(text)}{after}", re.IGNORECASE)))
    if ip.version == 4:
        hexed = f"{int(ip):08x}"
        # C0A80005, C0A80005:25, C0A800050019 (address and port in hex)
        with_port = "" if port is None else rf"(?:{port:04x}|[:_-]{port})?"
        forms.append(
            (f"hex address {hexed.upper()}", re.compile(rf"(?<![0-9a-f]){hexed}{with_port}(?![0-9a-f])", re.IGNORECASE))
        )
        forms.append((f"decimal address {int(ip)}", re.compile(rf"(?<!\d){int(ip)}(?!\d)")))
    return forms


def mentions(text: str, identity: Identity) -> list[str]:
    """Which of the honeypot's addresses or names ``text`` mentions (how a relay test is marked)."""
    found: list[str] = []
    for address in identity.addresses:
        for what, pattern in _ip_forms(address, identity.port):
            if pattern.search(text):
                found.append(what)
    for name in identity.hostnames:
        if name and re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE):
            found.append(f"name {name}")
    return found


def is_relay_test(facts: MessageFacts, relay_recipients: int) -> bool:
    return bool(facts.mentions) and 0 < relay_recipients <= RELAY_TEST_MAX_RECIPIENTS


# -- naming the tool behind a session -----------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    name: str
    helo: str | None = None  # regex on the HELO/EHLO name (case matters unless the pattern says (?i))
    address: str | None = None  # regex on any MAIL/RCPT path, case-insensitive


TOOLS: tuple[Tool, ...] = (
    # nmap's smtp-open-relay and smtp-* scripts: EHLO and addresses at nmap.scanme.org by default.
    Tool("nmap", helo=r"(?i)^nmap\.scanme\.org$", address=r"@nmap\.scanme\.org>?$"),
    # Metasploit's auxiliary/scanner/smtp/smtp_relay: "EHLO X", then a headerless random word.
    Tool("metasploit", helo=r"^X$"),
    # relaycheck: its catch-all control (rc-nouser-…), its default sender and recipients.
    Tool(
        "relaycheck",
        helo=r"(?i)(?:^|\.)relaycheck\.invalid$",
        address=r"(?:^<?rc-nouser-[0-9a-f]{10}@|^<?relaycheck@|relaycheck-probe@)",
    ),
    Tool("zgrab", helo=r"(?i)zgrab"),
)


def _addresses(record: SessionRecord) -> Iterable[str]:
    for command in record.commands:  # VRFY/EXPN arguments name addresses too
        verb, _, argument = command.partition(" ")
        if verb.upper() in ("VRFY", "EXPN") and argument:
            yield argument
    for t in record.transactions:
        yield t.mail_from
        for r in t.recipients:
            yield r.address


def name_tool(record: SessionRecord) -> str | None:
    """The tool that ran the session, when its traces say so."""
    helo = record.helo or ""
    addresses = list(_addresses(record))
    for tool in TOOLS:
        if tool.helo and re.search(tool.helo, helo):
            return tool.name
        if tool.address and any(re.search(tool.address, a, re.IGNORECASE) for a in addresses):
            return tool.name
    tricks = {r.probe_id for t in record.transactions for r in t.recipients if r.probe_id}
    if len(tricks) >= RELAYCHECK_TRICKS and not any(t.message for t in record.transactions):
        return "relay tester"  # many of the catalogue's tricks in one session, no message: a tool
    return None


# -- the session's classification ------------------------------------------------------------------


def _messages(record: SessionRecord) -> list[tuple[MessageFacts, int]]:
    return [
        (t.message, sum(r.scope == "relay" for r in t.recipients)) for t in record.transactions if t.message is not None
    ]


def _tool_probe(facts: MessageFacts) -> bool:
    """A message no spammer sends: no headers, a few bytes (Metasploit's smtp_relay)."""
    return facts.headers == 0 and facts.size < 64


Rule = Callable[[SessionRecord, str | None], tuple[Classification, str] | None]


def _spam(record: SessionRecord, tool: str | None) -> tuple[Classification, str] | None:
    relayed = [(m, n) for m, n in _messages(record) if n and not m.relay_test and not (tool and _tool_probe(m))]
    if relayed:
        total = sum(n for _, n in relayed)
        return Classification.SPAM_RUN, f"{len(relayed)} message(s) for {total} outside recipient(s)"
    return None


def _relay_test(record: SessionRecord, tool: str | None) -> tuple[Classification, str] | None:
    tests = [m for m, _ in _messages(record) if m.relay_test]
    if tests:
        return Classification.RELAY_TEST, "message names this relay (" + ", ".join(tests[0].mentions) + ")"
    return None


def _auth(record: SessionRecord, tool: str | None) -> tuple[Classification, str] | None:
    if record.auth and not _messages(record):
        return Classification.AUTH_ATTACK, f"{len(record.auth) + record.auth_dropped} login attempt(s), no message"
    return None


def _scanner(record: SessionRecord, tool: str | None) -> tuple[Classification, str] | None:
    messages = _messages(record)
    if not messages:
        relays = sum(r.scope == "relay" for t in record.transactions for r in t.recipients)
        return Classification.SCANNER, (
            f"{relays} outside recipient(s) tried, no message" if relays else "no message (banner or feature probe)"
        )
    if tool and all(_tool_probe(m) for m, _ in messages):
        return Classification.SCANNER, f"only {tool}'s own probe message(s)"
    return None


# Order matters: spam outranks a relay test in the same session (it is already abusing us).
RULES: tuple[Rule, ...] = (_spam, _relay_test, _auth, _scanner)


def classify(record: SessionRecord) -> tuple[Classification, str | None, list[str]]:
    """The session's classification, the tool named, and why."""
    tool = name_tool(record)
    for rule in RULES:
        decided = rule(record, tool)
        if decided is not None:
            return decided[0], tool, [decided[1]]
    return Classification.OTHER, tool, ["messages for local recipients only"]
