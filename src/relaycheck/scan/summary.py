"""``relaycheck report``: a summary of a scan's JSON Lines (text, json, markdown, html).

Records are read one at a time (a scan file can be larger than memory); only counts and the
first ``limit`` servers of each list are kept. Everything a server sent (banners, replies) is
untrusted: the HTML is escaped field by field and self-contained (no scripts, no external
resources), the Markdown escapes table syntax, the text keeps the engine's control-character
escaping.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from relaycheck.boundedio import (
    STDIN,
    InputError,
    InputFault,
    LongLine,
    UnexpectedContent,
    capped_lines,
    display_name,
    open_input,
    read_capped,
    shorten,
    sniff,
)
from relaycheck.render.escape import html_text as esc
from relaycheck.render.escape import md_text, visible

_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_IPV6 = re.compile(r"\[?\b[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}\b\]?")
_TUPLE = re.compile(r"\s*\('[^']*', \d+(?:, \d+, \d+)?\)")
_PORT = re.compile(r"\bport \d+")


def normalise(message: str) -> str:
    """An error or explanation with addresses and ports taken out, for grouping."""
    text = _TUPLE.sub("", message)
    text = _IPV4.sub("<ip>", text)
    text = _IPV6.sub("<ip>", text)
    return _PORT.sub("port <n>", text)


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + dot.strip() if dot else text


@dataclass
class Group:
    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class ScanSummary:
    path: str
    records: int = 0
    unreadable_lines: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_verdict: Counter[str] = field(default_factory=Counter)
    ports: Counter[int] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    open_relays: list[dict[str, Any]] = field(default_factory=list)
    inconclusive: dict[str, Group] = field(default_factory=dict)
    errors: dict[str, Group] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    limit: int = 200

    def _group(self, groups: dict[str, Group], reason: str, example: str) -> None:
        group = groups.setdefault(reason, Group())
        group.count += 1
        if len(group.examples) < 3:
            group.examples.append(example)

    def add(self, record: dict[str, Any]) -> None:
        self.records += 1
        status = str(record.get("status"))
        verdict = record.get("verdict")
        self.by_status[status] += 1
        if verdict is not None:
            self.by_verdict[str(verdict)] += 1
        if isinstance(record.get("port"), int):
            self.ports[record["port"]] += 1
        for code in record.get("findings") or ():
            self.findings[str(code)] += 1
        where = _where(record)
        if verdict == "open":
            if not self.limit or len(self.open_relays) < self.limit:
                self.open_relays.append(_open_entry(record))
        elif status != "ok":
            self._group(self.errors, f"{status}: {normalise(str(record.get('error') or ''))}", where)
        elif verdict == "inconclusive":
            explanation = ((record.get("result") or {}).get("verdict") or {}).get("explanation") or ""
            self._group(self.inconclusive, normalise(_first_sentence(str(explanation))), where)

    def as_dict(self) -> dict[str, Any]:
        return {
            "results": self.path,
            "records": self.records,
            "unreadable_lines": self.unreadable_lines,
            "by_status": dict(self.by_status.most_common()),
            "by_verdict": dict(self.by_verdict.most_common()),
            "ports": {str(p): n for p, n in self.ports.most_common()},
            "findings": dict(self.findings.most_common()),
            "open_relays": self.open_relays,
            "open_relays_listed": len(self.open_relays),
            "inconclusive_reasons": [
                {"reason": r, "count": g.count, "examples": g.examples} for r, g in _top(self.inconclusive)
            ],
            "errors": [{"error": r, "count": g.count, "examples": g.examples} for r, g in _top(self.errors)],
            "scan": {k: self.metadata.get(k) for k in ("start", "end", "complete", "tool") if k in self.metadata},
        }


def _top(groups: dict[str, Group], n: int = 15) -> list[tuple[str, Group]]:
    return sorted(groups.items(), key=lambda kv: (-kv[1].count, kv[0]))[:n]


def _where(record: dict[str, Any]) -> str:
    ip = record.get("ip") or "?"
    shown = f"[{ip}]" if ":" in str(ip) and "/" not in str(ip) and "-" not in str(ip) else str(ip)
    name = record.get("domain") or record.get("host")
    return f"{shown}:{record.get('port')}" + (f" ({name})" if name else "")


def _open_entry(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "ip": record.get("ip"),
        "port": record.get("port"),
        "host": record.get("host"),
        "domain": record.get("domain"),
        "tag": record.get("tag"),
        "confidence": record.get("confidence"),
        "banner": record.get("banner"),
        "evidence": [
            {
                "probe_id": e.get("probe_id"),
                "mail_from": e.get("mail_from"),
                "rcpt_to": e.get("rcpt_to"),
                "reply": e.get("reply"),
            }
            for e in (record.get("evidence") or [])[:3]
        ],
    }


MAX_RECORD_BYTES = 4 * 1024 * 1024  # a record with every transcript (--full) is far smaller
MAX_METADATA_BYTES = 16 * 1024 * 1024
# A file whose first lines are all unreadable is not scan results: stop instead of reading on
# (an endless pipe of anything else would otherwise be read forever).
GIVE_UP_AFTER_UNREADABLE = 10_000


def load_summary(path: str, metadata_path: str | None = None, *, limit: int = 200) -> ScanSummary:
    summary = ScanSummary(path=path, limit=limit)
    if metadata_path is None and path != STDIN and os.path.exists(f"{path}.meta.json"):
        metadata_path = f"{path}.meta.json"
    if metadata_path:
        raw = read_capped(metadata_path, MAX_METADATA_BYTES, what="scan metadata")
        try:
            loaded = json.loads(raw)
        except ValueError as exc:
            raise InputError(InputFault.UNREADABLE, f"cannot read metadata {shorten(metadata_path)}: {exc}") from None
        summary.metadata = loaded if isinstance(loaded, dict) else {}
    sniff(path, what="scan results (JSON Lines)")
    with open_input(path) as stream:
        for line in capped_lines(stream, MAX_RECORD_BYTES, name=path, what="scan results (JSON Lines)"):
            if isinstance(line, LongLine):
                summary.unreadable_lines += 1
            elif line.strip():
                _add_line(summary, line)
            if not summary.records and summary.unreadable_lines >= GIVE_UP_AFTER_UNREADABLE:
                break
    if not summary.records:
        count = summary.unreadable_lines
        unreadable = f" ({count:,} unreadable line{'s' if count != 1 else ''})" if count else ""
        raise UnexpectedContent(
            InputFault.NOT_WHAT_IT_CLAIMS, f"{display_name(path)} holds no scan records{unreadable}"
        )
    return summary


def _add_line(summary: ScanSummary, line: bytes) -> None:
    if b"\0" in line:
        summary.unreadable_lines += 1
        return
    try:
        record = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        summary.unreadable_lines += 1  # e.g. a torn last line of a scan still running
        return
    if isinstance(record, dict):
        summary.add(record)
    else:
        summary.unreadable_lines += 1


# -- renderers -------------------------------------------------------------------------------


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.items()) or "none"


def _evidence_line(entry: dict[str, Any]) -> str:
    evidence = entry["evidence"]
    if not evidence:
        return ""
    first = evidence[0]
    return f"RCPT TO:{first.get('rcpt_to')} -> {first.get('reply')}"


def render_text(s: dict[str, Any]) -> str:
    lines = [f"Scan results: {s['results']}"]
    scan = s["scan"]
    if scan:
        lines.append(
            f"  scan {scan.get('start')} .. {scan.get('end') or 'unfinished'}"
            + ("" if scan.get("complete", True) else " (incomplete: resume it with --resume)")
        )
    lines += [
        f"  {s['records']:,} records; verdicts: {_counts(s['by_verdict'])}",
        f"  status: {_counts(s['by_status'])}",
    ]
    if s["unreadable_lines"]:
        lines.append(f"  {s['unreadable_lines']} unreadable lines skipped")
    open_count = s["by_verdict"].get("open", 0)
    lines += ["", f"OPEN RELAYS ({open_count:,})" if open_count else "No open relay found."]
    for entry in s["open_relays"]:
        name = entry.get("domain") or entry.get("host") or ""
        lines.append(f"  {entry['ip']}:{entry['port']}  {name}  [{entry.get('confidence')}]")
        if entry.get("banner"):
            lines.append(f"      banner: {entry['banner']}")
        if _evidence_line(entry):
            lines.append(f"      {_evidence_line(entry)}")
    if open_count > len(s["open_relays"]):
        lines.append(f"  … and {open_count - len(s['open_relays']):,} more (raise --limit)")
    for title, key, label in (
        ("INCONCLUSIVE, by reason", "inconclusive_reasons", "reason"),
        ("NOT TESTED, by error", "errors", "error"),
    ):
        if s[key]:
            lines += ["", title]
            for group in s[key]:
                lines.append(f"  {group['count']:>7,}  {group[label]}")
                lines.append(f"           e.g. {', '.join(group['examples'])}")
    if s["findings"]:
        lines += ["", "FINDINGS", *(f"  {n:>7,}  {code}" for code, n in s["findings"].items())]
    return "\n".join(visible(line) for line in lines) + "\n"


def render_markdown(s: dict[str, Any]) -> str:
    out = [f"# Scan results: {md_text(s['results'])}", ""]
    if s["scan"]:
        out += [f"Scan {md_text(s['scan'].get('start'))} – {md_text(s['scan'].get('end') or 'unfinished')}", ""]
    out += ["| verdict | count |", "|---|---:|", *(f"| {md_text(k)} | {v} |" for k, v in s["by_verdict"].items()), ""]
    out += ["| status | count |", "|---|---:|", *(f"| {md_text(k)} | {v} |" for k, v in s["by_status"].items()), ""]
    out += [f"## Open relays ({s['by_verdict'].get('open', 0)})", ""]
    if s["open_relays"]:
        out += ["| address | port | name | confidence | evidence |", "|---|---:|---|---|---|"]
        for e in s["open_relays"]:
            out.append(f"| {md_text(e['ip'])} | {e['port']} | {md_text(e.get('domain') or e.get('host'))} | "
                       f"{md_text(e.get('confidence'))} | {md_text(_evidence_line(e))} |")
    else:
        out.append("No open relay found.")
    for title, key, label in (
        ("Inconclusive, by reason", "inconclusive_reasons", "reason"),
        ("Not tested, by error", "errors", "error"),
    ):
        if s[key]:
            out += ["", f"## {title}", "", f"| count | {label} | examples |", "|---:|---|---|"]
            out += [f"| {g['count']} | {md_text(g[label])} | {md_text(', '.join(g['examples']))} |" for g in s[key]]
    if s["findings"]:
        out += ["", "## Findings", "", "| finding | count |", "|---|---:|"]
        out += [f"| {md_text(c)} | {n} |" for c, n in s["findings"].items()]
    return "\n".join(out) + "\n"


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222;max-width:72em}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.n{text-align:right}.open{color:#b00020;font-weight:bold}
code{font:12px ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def render_html(s: dict[str, Any]) -> str:
    def td(value: object, cls: str = "") -> str:
        return f'<td class="{cls}">{esc(value)}</td>' if cls else f"<td>{esc(value)}</td>"

    def code(value: object) -> str:
        return f"<td><code>{esc(value)}</code></td>"

    parts = [f"<h1>Scan results: {esc(s['results'])}</h1>"]
    if s["scan"]:
        parts.append(f"<p>Scan {esc(s['scan'].get('start'))} – {esc(s['scan'].get('end') or 'unfinished')}</p>")
    parts.append(_html_table(["verdict", "count"], [[td(k), td(v, "n")] for k, v in s["by_verdict"].items()]))
    parts.append(_html_table(["status", "count"], [[td(k), td(v, "n")] for k, v in s["by_status"].items()]))
    open_count = s["by_verdict"].get("open", 0)
    parts.append(f'<h2 class="open">Open relays ({open_count})</h2>' if open_count else "<h2>No open relay found</h2>")
    if s["open_relays"]:
        parts.append(
            _html_table(
                ["address", "port", "name", "confidence", "banner", "evidence"],
                [
                    [
                        code(e["ip"]),
                        td(e["port"], "n"),
                        td(e.get("domain") or e.get("host")),
                        td(e.get("confidence")),
                        code(e.get("banner")),
                        code(_evidence_line(e)),
                    ]
                    for e in s["open_relays"]
                ],
            )
        )
    for title, key, label in (
        ("Inconclusive, by reason", "inconclusive_reasons", "reason"),
        ("Not tested, by error", "errors", "error"),
    ):
        if s[key]:
            parts.append(f"<h2>{esc(title)}</h2>")
            parts.append(_html_table(["count", label, "examples"],
                                     [[td(g["count"], "n"), td(g[label]), code(", ".join(g["examples"]))]
                                      for g in s[key]]))
    if s["findings"]:
        parts.append("<h2>Findings</h2>")
        parts.append(_html_table(["finding", "count"], [[td(c), td(n, "n")] for c, n in s["findings"].items()]))
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>relaycheck scan: {esc(s['results'])}</title><style>{_CSS}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
