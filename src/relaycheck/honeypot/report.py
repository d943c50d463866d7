"""``relaycheck honeypot report``: what the honeypot saw, as text, JSON, Markdown or HTML.

``summarise`` (pure) turns session records into a ``Summary``: sessions per classification, top
sources, drop-boxes with the campaigns that later included them, campaigns (messages grouped by
fuzzy hash), scanner sightings by tool, credentials tried, and a timeline. The renderers only
format it; the HTML page is self-contained, its timeline an inline SVG (no JavaScript).
"""

from __future__ import annotations

import contextlib
import html
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import ppdeep

from relaycheck.honeypot.model import Classification

CLASSES = tuple(c.value for c in Classification)
COLOURS = {
    "relay-test": "#d62728",
    "spam-run": "#ff7f0e",
    "scanner": "#1f77b4",
    "auth-attack": "#9467bd",
    "other": "#7f7f7f",
}
TOP = 20
CAMPAIGN_SIMILARITY = 60  # ssdeep score (0-100) from which two messages are one campaign
MAX_CAMPAIGN_MESSAGES = 5000  # messages compared for campaigns (the newest)


@dataclass
class Source:
    address: str
    sessions: int
    classifications: dict[str, int]
    last_seen: str


@dataclass
class DropboxSighting:
    address: str
    tests: int
    sources: list[str]
    first_seen: str
    last_seen: str
    campaigns: int  # later sessions that included it


@dataclass
class Campaign:
    fuzzy_hash: str
    messages: int
    recipients: int
    sources: list[str]
    subjects: list[str]
    urls: list[str]
    first_seen: str
    last_seen: str


@dataclass
class Credential:
    user: str
    password: str
    mechanism: str
    attempts: int
    sources: int


@dataclass
class Summary:
    since: str | None
    until: str
    sessions: int
    by_classification: dict[str, int]
    top_sources: list[Source] = field(default_factory=list)
    dropboxes: list[DropboxSighting] = field(default_factory=list)
    campaigns: list[Campaign] = field(default_factory=list)
    scanners: dict[str, int] = field(default_factory=dict)
    credentials: list[Credential] = field(default_factory=list)
    delivered: int = 0
    timeline_step: str = "hour"
    timeline: list[dict[str, Any]] = field(default_factory=list)  # {"start": iso, class: count…}


def _bucket(moment: datetime, step: timedelta) -> datetime:
    if step >= timedelta(days=1):
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def _campaigns(messages: list[tuple[dict[str, Any], dict[str, Any], int]]) -> list[Campaign]:
    groups: list[tuple[str, list[tuple[dict[str, Any], dict[str, Any], int]]]] = []
    for item in messages[-MAX_CAMPAIGN_MESSAGES:]:
        fuzzy = str(item[1].get("fuzzy_hash") or item[1].get("sha256") or "")
        for leader, members in groups:
            if fuzzy == leader or (fuzzy and leader and ppdeep.compare(fuzzy, leader) >= CAMPAIGN_SIMILARITY):
                members.append(item)
                break
        else:
            groups.append((fuzzy, [item]))
    campaigns = []
    for leader, members in groups:
        records = [m[0] for m in members]
        campaigns.append(
            Campaign(
                fuzzy_hash=leader,
                messages=len(members),
                recipients=sum(m[2] for m in members),
                sources=sorted({str(r["client_ip"]) for r in records})[:TOP],
                subjects=list(dict.fromkeys(str(m[1].get("subject", "")) for m in members))[:5],
                urls=list(dict.fromkeys(u for m in members for u in m[1].get("urls", [])))[:10],
                first_seen=min(str(r["end"]) for r in records),
                last_seen=max(str(r["end"]) for r in records),
            )
        )
    campaigns.sort(key=lambda c: (-c.messages, c.first_seen))
    return campaigns[:TOP]


def summarise(records: Iterable[dict[str, Any]], since: datetime | None, until: datetime) -> Summary:
    """The report's content, from session records (as ``read_records`` yields them)."""
    rows = list(records)
    classes: Counter[str] = Counter()
    sources: dict[str, Counter[str]] = defaultdict(Counter)
    last: dict[str, str] = {}
    scanners: Counter[str] = Counter()
    credentials: Counter[tuple[str, str, str]] = Counter()
    credential_sources: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    boxes: dict[str, DropboxSighting] = {}
    box_campaigns: Counter[str] = Counter()
    spam: list[tuple[dict[str, Any], dict[str, Any], int]] = []
    delivered = 0
    times: list[tuple[datetime, str]] = []
    for r in rows:
        kind = str(r.get("classification", "other"))
        ip = str(r.get("client_ip", "?"))
        end = str(r["end"])
        classes[kind] += 1
        sources[ip][kind] += 1
        last[ip] = max(last.get(ip, ""), end)
        with contextlib.suppress(ValueError):
            times.append((datetime.fromisoformat(end), kind))
        if kind == "scanner":
            scanners[str(r.get("tool") or "unnamed")] += 1
        for attempt in r.get("auth", []):
            key = (str(attempt.get("user", "")), str(attempt.get("password", "")), str(attempt.get("mechanism", "")))
            credentials[key] += 1
            credential_sources[key].add(ip)
        for box in r.get("dropboxes", []):
            box_campaigns[str(box).lower()] += 1
        for t in r.get("transactions", []):
            message = t.get("message")
            if not message:
                continue
            delivered += bool(message.get("delivered"))
            relays = [x for x in t.get("recipients", []) if x.get("scope") == "relay"]
            if kind == "relay-test" and message.get("relay_test"):
                for x in relays:
                    address = str(x.get("address", "")).strip("<>").lower()
                    seen = boxes.get(address)
                    if seen is None:
                        boxes[address] = DropboxSighting(address, 1, [ip], end, end, 0)
                    else:
                        seen.tests += 1
                        seen.last_seen = max(seen.last_seen, end)
                        seen.first_seen = min(seen.first_seen, end)
                        if ip not in seen.sources:
                            seen.sources.append(ip)
            elif kind == "spam-run" and relays:
                spam.append((r, message, len(relays)))
    for address, box in boxes.items():
        box.campaigns = box_campaigns.get(address, 0)
    step = timedelta(days=1) if since is not None and until - since > timedelta(days=3) else timedelta(hours=1)
    buckets: dict[datetime, Counter[str]] = defaultdict(Counter)
    for moment, kind in times:
        buckets[_bucket(moment, step)][kind] += 1
    timeline = [
        {"start": start.isoformat(), **{c: counts.get(c, 0) for c in CLASSES}}
        for start, counts in sorted(buckets.items())
    ]
    top = sorted(sources.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:TOP]
    return Summary(
        since=since.isoformat() if since else None,
        until=until.isoformat(),
        sessions=len(rows),
        by_classification={c: classes.get(c, 0) for c in CLASSES},
        top_sources=[Source(ip, sum(c.values()), dict(c), last[ip]) for ip, c in top],
        dropboxes=sorted(boxes.values(), key=lambda b: (-b.tests - b.campaigns, b.address))[: TOP * 5],
        campaigns=_campaigns(spam),
        scanners=dict(scanners.most_common()),
        credentials=[
            Credential(u, p, m, n, len(credential_sources[(u, p, m)]))
            for (u, p, m), n in credentials.most_common(TOP * 2)
        ],
        delivered=delivered,
        timeline_step="day" if step >= timedelta(days=1) else "hour",
        timeline=timeline,
    )


# -- renderers -------------------------------------------------------------------------------------


def render_json(summary: Summary) -> str:
    return json.dumps({"kind": "relaycheck-honeypot-report", "version": 1, **asdict(summary)}, indent=2)


def _window(summary: Summary) -> str:
    return f"{summary.since or 'the beginning'} to {summary.until}"


def render_text(summary: Summary) -> str:
    out = [f"Honeypot report: {summary.sessions} session(s), {_window(summary)}"]
    out.append("  " + ", ".join(f"{c}: {n}" for c, n in summary.by_classification.items()))
    out.append(f"  relay tests delivered (opt-in): {summary.delivered}")
    out.append("")
    out.append("Top sources")
    for s in summary.top_sources:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.classifications.items()))
        out.append(f"  {s.address:<39} {s.sessions:>6}  {kinds}  (last {s.last_seen})")
    out.append("")
    out.append("Drop-boxes (recipients of relay tests)")
    for b in summary.dropboxes:
        out.append(
            f"  {b.address}  tests {b.tests}, in {b.campaigns} later campaign session(s), "
            f"from {', '.join(b.sources)}  ({b.first_seen} .. {b.last_seen})"
        )
    out.append("")
    out.append("Campaigns")
    for c in summary.campaigns:
        subject = c.subjects[0] if c.subjects else ""
        out.append(f"  {c.messages} message(s), {c.recipients} recipient(s), {len(c.sources)} source(s): {subject!r}")
        for url in c.urls[:3]:
            out.append(f"      {url}")
    out.append("")
    out.append("Scanner sightings")
    for tool, n in summary.scanners.items():
        out.append(f"  {tool}: {n}")
    out.append("")
    out.append("Credentials tried")
    for cred in summary.credentials:
        out.append(f"  {cred.mechanism} {cred.user!r} / {cred.password!r}: {cred.attempts} ({cred.sources} source(s))")
    return "\n".join(out) + "\n"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("`", "'")


def render_markdown(summary: Summary) -> str:
    out = ["# Honeypot report", "", f"{summary.sessions} session(s), {_md(_window(summary))}.", ""]
    out += ["| classification | sessions |", "|---|---:|"]
    out += [f"| {c} | {n} |" for c, n in summary.by_classification.items()]
    out += ["", "## Top sources", "", "| address | sessions | classifications | last seen |", "|---|---:|---|---|"]
    for s in summary.top_sources:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.classifications.items()))
        out.append(f"| {_md(s.address)} | {s.sessions} | {kinds} | {_md(s.last_seen)} |")
    out += ["", "## Drop-boxes", "", "| address | tests | later campaigns | sources |", "|---|---:|---:|---|"]
    for b in summary.dropboxes:
        out.append(f"| {_md(b.address)} | {b.tests} | {b.campaigns} | {_md(', '.join(b.sources))} |")
    out += ["", "## Campaigns", "", "| messages | recipients | sources | subject |", "|---:|---:|---:|---|"]
    for c in summary.campaigns:
        out.append(f"| {c.messages} | {c.recipients} | {len(c.sources)} | {_md(c.subjects[0] if c.subjects else '')} |")
    out += ["", "## Scanner sightings", "", "| tool | sessions |", "|---|---:|"]
    out += [f"| {_md(t)} | {n} |" for t, n in summary.scanners.items()]
    out += ["", "## Credentials tried", "", "| mechanism | user | password | attempts |", "|---|---|---|---:|"]
    out += [f"| {_md(c.mechanism)} | {_md(c.user)} | {_md(c.password)} | {c.attempts} |" for c in summary.credentials]
    return "\n".join(out) + "\n"


def timeline_svg(summary: Summary, width: int = 800, height: int = 160) -> str:
    """Sessions per hour (or day), stacked by classification, as inline SVG."""
    rows = summary.timeline
    if not rows:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40" role="img">'
            '<text x="4" y="24">no sessions</text></svg>'
        )
    peak = max(sum(int(r[c]) for c in CLASSES) for r in rows) or 1
    bar = max(1.0, (width - 40) / len(rows))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" role="img" '
        f'aria-label="sessions per {summary.timeline_step}">',
        f'<text x="0" y="12" font-size="11">{peak}</text>',
    ]
    for index, row in enumerate(rows):
        x = 30 + index * bar
        y = float(height)
        for c in CLASSES:
            n = int(row[c])
            if not n:
                continue
            h = n / peak * (height - 20)
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 1, 0.5):.1f}" height="{h:.1f}" fill="{COLOURS[c]}">'
                f"<title>{html.escape(str(row['start']))}: {n} {c}</title></rect>"
            )
    parts.append(f'<text x="30" y="{height + 14}" font-size="11">{html.escape(str(rows[0]["start"]))}</text>')
    legend_x = 30
    for c in CLASSES:
        parts.append(f'<rect x="{legend_x}" y="{height + 20}" width="10" height="10" fill="{COLOURS[c]}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{height + 29}" font-size="11">{c}</text>')
        legend_x += 110
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(summary: Summary) -> str:
    sections = [
        f"<h1>Honeypot report</h1><p>{summary.sessions} session(s), {html.escape(_window(summary))}. "
        f"Relay tests delivered (opt-in): {summary.delivered}.</p>",
        _table(["classification", "sessions"], [[c, n] for c, n in summary.by_classification.items()]),
        f"<h2>Timeline (sessions per {summary.timeline_step})</h2>",
        timeline_svg(summary),
        "<h2>Top sources</h2>",
        _table(
            ["address", "sessions", "classifications", "last seen"],
            [
                [
                    s.address,
                    s.sessions,
                    ", ".join(f"{k} {n}" for k, n in sorted(s.classifications.items())),
                    s.last_seen,
                ]
                for s in summary.top_sources
            ],
        ),
        "<h2>Drop-boxes</h2>",
        _table(
            ["address", "relay tests", "later campaign sessions", "sources", "first seen", "last seen"],
            [
                [b.address, b.tests, b.campaigns, ", ".join(b.sources), b.first_seen, b.last_seen]
                for b in summary.dropboxes
            ],
        ),
        "<h2>Campaigns</h2>",
        _table(
            ["messages", "recipients", "sources", "subjects", "URLs"],
            [
                [c.messages, c.recipients, len(c.sources), " | ".join(c.subjects), " ".join(c.urls[:5])]
                for c in summary.campaigns
            ],
        ),
        "<h2>Scanner sightings</h2>",
        _table(["tool", "sessions"], [[t, n] for t, n in summary.scanners.items()]),
        "<h2>Credentials tried</h2>",
        _table(
            ["mechanism", "user", "password", "attempts", "sources"],
            [[c.mechanism, c.user, c.password, c.attempts, c.sources] for c in summary.credentials],
        ),
    ]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>relaycheck honeypot report</title>'
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )


RENDERERS = {"text": render_text, "json": render_json, "markdown": render_markdown, "html": render_html}
