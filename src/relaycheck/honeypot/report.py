"""``relaycheck honeypot report``: what the honeypot saw, as text, JSON, Markdown or HTML.

``summarise`` (pure) turns session records into a ``Summary``: sessions per classification, top
sources, drop-boxes with the campaigns that later included them, campaigns (messages grouped by
fuzzy hash), scanner sightings by tool, credentials tried, and a timeline. The renderers only
format it; the HTML page is self-contained, its timeline an inline SVG (no JavaScript).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import ppdeep

from relaycheck.honeypot.model import Classification
from relaycheck.render.escape import html_text as esc
from relaycheck.render.escape import md_text

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
MAX_CREDENTIALS = 100_000  # distinct credentials counted (a stuffing run can try millions)


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


@dataclass(frozen=True)
class _Spam:
    """What the campaign grouping needs of one spam message (records are not kept whole)."""

    source: str
    end: str
    fuzzy_hash: str
    subject: str
    urls: tuple[str, ...]
    recipients: int


def _block_size(fuzzy: str) -> int:
    head = fuzzy.split(":", 1)[0]
    return int(head) if head.isdigit() else 0


def _similar(one: str, other: str) -> bool:
    # ssdeep compares only hashes whose block sizes are equal or a factor of 2 apart: skip the rest
    a, b = _block_size(one), _block_size(other)
    if not a or not b or (a not in (b, 2 * b) and b != 2 * a):
        return False
    return bool(ppdeep.compare(one, other) >= CAMPAIGN_SIMILARITY)


def _campaigns(messages: Iterable[_Spam]) -> list[Campaign]:
    groups: dict[str, list[_Spam]] = {}  # leader's fuzzy hash -> members
    joined: dict[str, str] = {}  # fuzzy hash -> the leader it was grouped with (each compared once)
    for item in messages:
        leader = joined.get(item.fuzzy_hash)
        if leader is None:
            leader = next((known for known in groups if _similar(item.fuzzy_hash, known)), item.fuzzy_hash)
            joined[item.fuzzy_hash] = leader
        groups.setdefault(leader, []).append(item)
    campaigns = [
        Campaign(
            fuzzy_hash=leader,
            messages=len(members),
            recipients=sum(m.recipients for m in members),
            sources=sorted({m.source for m in members})[:TOP],
            subjects=list(dict.fromkeys(m.subject for m in members))[:5],
            urls=list(dict.fromkeys(u for m in members for u in m.urls))[:10],
            first_seen=min(m.end for m in members),
            last_seen=max(m.end for m in members),
        )
        for leader, members in groups.items()
    ]
    campaigns.sort(key=lambda c: (-c.messages, c.first_seen))
    return campaigns[:TOP]


def summarise(records: Iterable[dict[str, Any]], since: datetime | None, until: datetime) -> Summary:
    """The report's content, from session records (as ``read_records`` yields them).

    One pass, keeping counters rather than records: a log of a million sessions is summarised in
    bounded memory (distinct credentials are counted up to ``MAX_CREDENTIALS``; campaigns are
    grouped from the newest ``MAX_CAMPAIGN_MESSAGES`` spam messages).
    """
    step = timedelta(days=1) if since is not None and until - since > timedelta(days=3) else timedelta(hours=1)
    sessions = 0
    classes: Counter[str] = Counter()
    sources: dict[str, Counter[str]] = defaultdict(Counter)
    last: dict[str, str] = {}
    scanners: Counter[str] = Counter()
    credentials: Counter[tuple[str, str, str]] = Counter()
    credential_sources: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    boxes: dict[str, DropboxSighting] = {}
    box_campaigns: Counter[str] = Counter()
    spam: deque[_Spam] = deque(maxlen=MAX_CAMPAIGN_MESSAGES)
    delivered = 0
    buckets: dict[datetime, Counter[str]] = defaultdict(Counter)
    for r in records:
        sessions += 1
        kind = str(r.get("classification", "other"))
        ip = str(r.get("client_ip", "?"))
        end = str(r["end"])
        classes[kind] += 1
        sources[ip][kind] += 1
        last[ip] = max(last.get(ip, ""), end)
        with contextlib.suppress(ValueError):
            buckets[_bucket(datetime.fromisoformat(end), step)][kind] += 1
        if kind == "scanner":
            scanners[str(r.get("tool") or "unnamed")] += 1
        for attempt in r.get("auth", []):
            key = (str(attempt.get("user", "")), str(attempt.get("password", "")), str(attempt.get("mechanism", "")))
            if key in credentials or len(credentials) < MAX_CREDENTIALS:
                credentials[key] += 1
                if len(credential_sources[key]) < TOP:
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
                        if ip not in seen.sources and len(seen.sources) < TOP:
                            seen.sources.append(ip)
            elif kind == "spam-run" and relays:
                fuzzy = str(message.get("fuzzy_hash") or message.get("sha256") or "")
                urls = tuple(str(u) for u in message.get("urls", [])[:10])
                spam.append(_Spam(ip, end, fuzzy, str(message.get("subject", "")), urls, len(relays)))
    for address, box in boxes.items():
        box.campaigns = box_campaigns.get(address, 0)
    timeline = [
        {"start": start.isoformat(), **{c: counts.get(c, 0) for c in CLASSES}}
        for start, counts in sorted(buckets.items())
    ]
    top = sorted(sources.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:TOP]
    return Summary(
        since=since.isoformat() if since else None,
        until=until.isoformat(),
        sessions=sessions,
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
    return json.dumps({"kind": "relaycheck-honeypot-report", "version": 1, **asdict(summary)}, indent=2) + "\n"


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


def render_markdown(summary: Summary) -> str:
    out = ["# Honeypot report", "", f"{summary.sessions} session(s), {md_text(_window(summary))}.", ""]
    out += ["| classification | sessions |", "|---|---:|"]
    out += [f"| {c} | {n} |" for c, n in summary.by_classification.items()]
    out += ["", "## Top sources", "", "| address | sessions | classifications | last seen |", "|---|---:|---|---|"]
    for s in summary.top_sources:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.classifications.items()))
        out.append(f"| {md_text(s.address)} | {s.sessions} | {kinds} | {md_text(s.last_seen)} |")
    out += ["", "## Drop-boxes", "", "| address | tests | later campaigns | sources |", "|---|---:|---:|---|"]
    for b in summary.dropboxes:
        out.append(f"| {md_text(b.address)} | {b.tests} | {b.campaigns} | {md_text(', '.join(b.sources))} |")
    out += ["", "## Campaigns", "", "| messages | recipients | sources | subject |", "|---:|---:|---:|---|"]
    for c in summary.campaigns:
        subject = md_text(c.subjects[0] if c.subjects else "")
        out.append(f"| {c.messages} | {c.recipients} | {len(c.sources)} | {subject} |")
    out += ["", "## Scanner sightings", "", "| tool | sessions |", "|---|---:|"]
    out += [f"| {md_text(t)} | {n} |" for t, n in summary.scanners.items()]
    out += ["", "## Credentials tried", "", "| mechanism | user | password | attempts |", "|---|---|---|---:|"]
    out += [
        f"| {md_text(c.mechanism)} | {md_text(c.user)} | {md_text(c.password)} | {c.attempts} |"
        for c in summary.credentials
    ]
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
                f"<title>{esc(str(row['start']))}: {n} {c}</title></rect>"
            )
    parts.append(f'<text x="30" y="{height + 14}" font-size="11">{esc(str(rows[0]["start"]))}</text>')
    legend_x = 30
    for c in CLASSES:
        parts.append(f'<rect x="{legend_x}" y="{height + 20}" width="10" height="10" fill="{COLOURS[c]}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{height + 29}" font-size="11">{c}</text>')
        legend_x += 110
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(summary: Summary) -> str:
    sections = [
        f"<h1>Honeypot report</h1><p>{summary.sessions} session(s), {esc(_window(summary))}. "
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

