"""Presentation helpers for the templates: plain words for verdicts, dates, transcripts.

Templates get the stored JSON report (the API's schema) and these helpers; every value is
inserted by Jinja2 with autoescaping on, so server text is shown, never interpreted.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2
from fastapi.templating import Jinja2Templates

from relaycheck.api import parse_target
from relaycheck.errors import UsageError


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


def shown_target(given: str, port: int) -> str:
    """What was tested, as the user wrote it, with the port when it was chosen separately."""
    try:
        written = parse_target(given).port
    except UsageError:
        written = None
    return given if written is not None or port == 25 else f"{given}, port {port}"


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
    """Split a remediation-style text into ("p", paragraph) and ("code", block) parts.

    Paragraphs are separated by blank lines; a part whose lines are all indented by four
    spaces is a command or configuration block (shown verbatim).
    """
    parts: list[tuple[str, str]] = []
    for chunk in re.split(r"\n\s*\n", (text or "").strip("\n")):
        lines = chunk.split("\n")
        if all(line.startswith("    ") or not line.strip() for line in lines):
            parts.append(("code", textwrap.dedent(chunk)))
        elif chunk.strip():
            parts.append(("p", " ".join(line.strip() for line in lines)))
    return parts


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
        blocks=blocks,
    )
    env.filters.update(when=when, iso=iso, ago=ago)
    return Jinja2Templates(env=env)
