"""Presentation helpers for the templates: plain words for verdicts, dates, transcripts.

Templates get the stored JSON report (the API's schema) and these helpers; every value is
inserted by Jinja2 with autoescaping on, so server text is shown, never interpreted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2
from fastapi.templating import Jinja2Templates

from relaycheck.api import parse_target
from relaycheck.errors import UsageError
from relaycheck.findings.fixes import blocks as fix_blocks
from relaycheck.findings.registry import fix_for
from relaycheck.fingerprint import FAMILY_NAMES
from relaycheck.web.guard import to_ascii, to_unicode


@dataclass(frozen=True)
class Headline:
    kind: str  # open / closed / inconclusive: also the CSS class
    title: str
    lead: str


def headline(verdict: str | None, report: dict[str, Any] | None, given: str) -> Headline:
    """The verdict header, in plain words, for the whole check."""
    targets = (report or {}).get("targets", [])
    summary = (report or {}).get("summary", {})
    tested = len(targets)
    if verdict == "open":
        opened = int(summary.get("open", 0))
        if tested > 1:
            lead = (
                f"{opened} of the {tested} mail servers tested for {given} accepted mail for outside "
                "recipients: anyone on the Internet can send mail through them."
            )
        else:
            lead = (
                f"{given} accepted mail for outside recipients: anyone on the Internet can send mail "
                "(spam, phishing) through it."
            )
        return Headline("open", "Open relay", lead)
    if verdict == "closed":
        servers = "every mail server tested" if tested > 1 else "the server"
        lead = (
            f"Not an open relay: {servers} for {given} refused every relay attempt, "
            "and accepted mail for its own postmaster."
        )
        return Headline("closed", "Not an open relay", lead)
    if tested == 0:
        return Headline("inconclusive", "Inconclusive", f"Nothing could be tested for {given}; see below.")
    return Headline(
        "inconclusive",
        "Inconclusive",
        f"We could not tell whether {given} relays mail. The details below say what stopped us.",
    )


def both_forms(name: str) -> str:
    """An internationalised name in both forms, ``bücher.de (xn--bcher-kva.de)``; others as given."""
    try:
        ascii_form = to_ascii(name)
    except UsageError:
        return name
    unicode_form = to_unicode(ascii_form)
    return name if unicode_form == ascii_form else f"{unicode_form} ({ascii_form})"


def shown_target(given: str, port: int) -> str:
    """What was tested, as the user wrote it (IDN in both forms), with the port when it was chosen
    separately."""
    try:
        written = parse_target(to_ascii(given) if ":" not in given else given).port
    except UsageError:
        written = None
    shown = both_forms(given) if ":" not in given else given
    return shown if written is not None or port == 25 else f"{shown}, port {port}"


def duration(seconds: float | None) -> str:
    """``0.04 s``, ``2.3 s``, ``1 min 12 s``: never a misleading ``0.0 s``."""
    value = float(seconds or 0.0)
    if value < 0.1:
        return f"{value * 1000:.0f} ms" if value >= 0.001 else "under 1 ms"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def download_name(row: Any, extension: str) -> str:
    """``relaycheck-example.com-2026-12-03.html``: safe characters only."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", to_ascii_or_same(row.input))[:60].strip("_.") or "report"
    return f"relaycheck-{base}-{row.created.astimezone(UTC):%Y-%m-%d}.{extension}"


def to_ascii_or_same(name: str) -> str:
    try:
        return to_ascii(name)
    except UsageError:
        return name


# What a web user can do instead of a command-line option, per option the verdict texts name.
# The verdict texts are written for the command line; the web service runs the retry budget
# itself and cannot run delivery mode, so each option is replaced by what helps a web user.
WEB_ADVICE: dict[str, str] = {
    "--retry-budget": "The service already retried the deferred attempts for {budget}. Test again later "
    "(greylisting usually clears within 5 minutes), or ask the server's administrator whether our "
    "address is being rate-limited.",
    "--confirm": "Only a delivery test proves that mail really leaves: from a machine outside your "
    "network, send a message through this server to a mailbox you own elsewhere and see whether it "
    "arrives (relaycheck's command-line tool can do this for you). This service only probes, "
    "so that it never sends mail.",
    "--transport": "Then test again on port 465 (TLS from the start) if the server offers it.",
    "--ext-recipient": "The outside addresses this service uses were refused as unknown; the "
    "operator of this service can configure other outside recipients.",
    "--sender": "The server refused every sender this service tried; its operator can configure a "
    "sender address the server accepts, or relaycheck's command-line tool can test with one.",
    "--confirm-timeout": "Check the server's queue and logs for the test messages: they may still "
    "be on their way.",
    "relaycheck audit": "Have the mail server's configuration checked: relaycheck's command-line "
    "tool can audit Postfix, Exim, Sendmail, OpenSMTPD and Exchange configurations for relay rules.",
}
# A command-line option, or a relaycheck command named in quotes or backticks
_OPTION = re.compile(r"--[a-z][a-z-]+|(?<=['`\"])relaycheck [a-z]+(?=['`\"])")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def for_the_web(text: str | None, retry_budget: float) -> str:
    """Advice phrased for a web user: sentences that name a command-line option are replaced by
    what the user can do from here (once per option), the rest is kept as written."""
    if not text:
        return ""
    kept: list[str] = []
    used: set[str] = set()
    budget = duration(retry_budget) if retry_budget else "a while"
    for paragraph in re.split(r"(\n\s*\n)", text):
        if paragraph.strip() == "" or paragraph.startswith("    "):
            kept.append(paragraph)
            continue
        sentences = []
        for sentence in _SENTENCE.split(paragraph):
            options = _OPTION.findall(sentence)
            if not options:
                sentences.append(sentence)
                continue
            cut = sentence.rfind(":", 0, sentence.index(options[0]))
            if cut > 0:  # "what was seen: run with --option" keeps what was seen
                sentences.append(sentence[:cut].rstrip() + ".")
            elif ", or " in sentence[: sentence.index(options[0])]:  # "Do this, or run relaycheck x."
                sentences.append(sentence[: sentence.index(", or ")].rstrip() + ".")
            for option in options:
                if option not in used:
                    used.add(option)
                    sentences.append(WEB_ADVICE.get(option, "").format(budget=budget))
        kept.append(" ".join(x for x in sentences if x))
    return "".join(kept).strip()


@dataclass(frozen=True)
class Fix:
    heading: str
    text: str


def open_relay_fix(target: dict[str, Any]) -> Fix | None:
    """How to close an open relay on the MTA the server was recognised as (generic otherwise),
    unless the verdict's advice already says it."""
    if target.get("verdict", {}).get("verdict") != "open":
        return None
    fingerprint = (target.get("hygiene") or {}).get("fingerprint") or {}
    family = str(fingerprint.get("family") or "unknown")
    text = fix_for("open-relay", family)
    advice = (target.get("verdict", {}).get("advice") or "").strip()
    if not text or text.strip() == advice:
        return None
    name = FAMILY_NAMES.get(family)
    return Fix(f"How to close it on {name}" if name else "How to close it", text)


def key_evidence(target: dict[str, Any]) -> dict[str, Any] | None:
    """The one observation that best shows the verdict: an accepted relay attempt when open, the
    refused plain relay attempt when closed, else the first deferred or failed attempt."""
    observations: list[dict[str, Any]] = target.get("observations", [])
    by_id: dict[str, dict[str, Any]] = {str(o.get("probe_id")): o for o in observations}
    for probe_id in target.get("verdict", {}).get("evidence", []):
        if probe_id in by_id:
            return by_id[probe_id]
    verdict = target.get("verdict", {}).get("verdict")
    relay = [o for o in observations if o.get("kind") == "relay"]
    wanted = {"open": ("accepted",), "closed": ("rejected-policy",)}.get(verdict, ("deferred", "error"))
    for o in relay:
        if o.get("outcome") in wanted:
            return o
    return relay[0] if relay else None


VERDICT_WORDS = {"open": "Open relay", "closed": "Not open", "inconclusive": "Inconclusive"}
OUTCOME_WORDS = {
    "accepted": "accepted",
    "rejected-policy": "refused (policy)",
    "rejected-other": "refused (other)",
    "deferred": "deferred (4xx)",
    "error": "error",
    "skipped": "skipped",
}


def outcome_class(observation: dict[str, Any]) -> str:
    outcome = observation.get("outcome")
    if outcome == "accepted":
        return "bad" if observation.get("kind") == "relay" else "neutral"
    if outcome == "rejected-policy":
        return "good"
    if outcome in ("deferred", "error"):
        return "warn"
    return "neutral"


def reply_text(reply: dict[str, Any] | None) -> str:
    if not reply:
        return "(no reply)"
    return f"{reply.get('code', '')} {reply.get('text', '')}".strip()


def transcript(connection: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, line) pairs, kind "c" (client), "s" (server) or "note", as an SMTP log shows them."""
    out: list[tuple[str, str]] = []
    for exchange in connection.get("exchanges", []):
        if exchange.get("sent") is not None:
            out.append(("c", f"C: {exchange['sent']}"))
        reply = exchange.get("reply")
        if reply:
            lines = reply.get("lines") or [""]
            for number, line in enumerate(lines):
                separator = "-" if number < len(lines) - 1 else " "
                out.append(("s", f"S: {reply['code']}{separator}{line}".rstrip()))
        if exchange.get("note"):
            out.append(("note", f"   ({exchange['note']})"))
    if connection.get("error"):
        out.append(("note", f"   (connection ended: {connection['error']})"))
    return out


def blocks(text: str | None) -> list[tuple[str, str]]:
    """A fix or advice text as ("p", paragraph) and ("code", verbatim block) parts for the
    templates: the same split as every other report's (``findings.fixes.blocks``)."""
    return [("code" if b.verbatim else "p", b.text) for b in fix_blocks(text or "")]


def when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else ""


def ago(value: datetime) -> str:
    seconds = int((datetime.now(UTC) - value).total_seconds())
    if seconds < 60:
        return "just now"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("relaycheck.web", "templates"),
        autoescape=True,  # every value is escaped unless a template says otherwise (none does)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        headline=headline,
        VERDICT_WORDS=VERDICT_WORDS,
        OUTCOME_WORDS=OUTCOME_WORDS,
        outcome_class=outcome_class,
        reply_text=reply_text,
        transcript=transcript,
        shown_target=shown_target,
        both_forms=both_forms,
        blocks=blocks,
        for_the_web=for_the_web,
        key_evidence=key_evidence,
        open_relay_fix=open_relay_fix,
    )
    env.filters.update(when=when, iso=iso, ago=ago, duration=duration)
    return Jinja2Templates(env=env)
