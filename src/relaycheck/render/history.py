"""A target's history (``relaycheck history``) in text, JSON and a self-contained HTML page.

Every run, newest first, with what changed since the run before it; the alerts ``watch`` sent
or failed to send. Every dynamic string in the HTML goes through ``render.escape.html_text``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relaycheck.history.store import AlertRow
from relaycheck.history.timeline import Entry
from relaycheck.render.escape import html_text

HISTORY_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class HistoryReport:
    """What ``relaycheck history`` shows (``render.ReportKind.HISTORY``)."""

    target: str
    entries: Sequence[Entry]
    alerts: Sequence[AlertRow]
    total: int


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def history_dict(target: str, entries: Sequence[Entry], alerts: Sequence[AlertRow], total: int) -> dict[str, Any]:
    return {
        "schema_version": HISTORY_SCHEMA_VERSION,
        "target": target,
        "total_runs": total,
        "runs": [
            {
                "check_id": e.row.id,
                "created": _when(e.row.created),
                "finished": _when(e.row.finished),
                "source": e.row.source,
                "input": e.row.input,
                "status": e.row.status,
                "verdict": e.row.verdict,
                "error": e.row.error,
                "changed": e.changed,
                "changes": [c.as_dict() for c in e.changes],
            }
            for e in entries
        ],
        "alerts": [
            {
                "created": _when(a.created),
                "channel": a.channel,
                "check_id": a.check_id,
                "status": a.status,
                "attempts": a.attempts,
                "error": a.error,
            }
            for a in alerts
        ],
    }


def render_history_json(target: str, entries: Sequence[Entry], alerts: Sequence[AlertRow], total: int) -> str:
    return json.dumps(history_dict(target, entries, alerts, total), indent=2, ensure_ascii=False) + "\n"


def render_history_text(target: str, entries: Sequence[Entry], alerts: Sequence[AlertRow], total: int) -> str:
    if not entries:
        return f"No runs of {target} in this database.\n"
    lines = [f"History of {target}: {len(entries)} of {total} run(s), newest first"]
    for e in entries:
        verdict = (
            (e.row.verdict or e.row.status).upper() if e.row.verdict == "open" else (e.row.verdict or e.row.status)
        )
        mark = "  CHANGED" if e.changed else ("  (first run)" if e.first and e.row.verdict else "")
        lines.append(f"{_when(e.row.created)}  {e.row.source:<5}  {verdict:<12}{mark}")
        if e.row.error:
            lines.append(f"    error: {e.row.error}")
        lines += [f"    - {c.summary}" for c in e.changes]
    if alerts:
        lines += ["", "Alerts (newest first):"]
        for a in alerts:
            problem = f": {a.error}" if a.error else ""
            lines.append(
                f"{_when(a.created)}  {a.status:<8} {a.channel} (run {a.check_id}, {a.attempts} attempt(s)){problem}"
            )
    return "\n".join(lines) + "\n"


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 64em; padding: 0 1em; color: #1b1f23; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .35em .6em; vertical-align: top; }
tr { border-bottom: 1px solid #ddd; } tr.changed { background: #fff5d6; }
.open { color: #a40e26; font-weight: bold; } .closed { color: #116329; } .inconclusive { color: #7a5a00; }
ul { margin: .2em 0; padding-left: 1.2em; }
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'none'; base-uri 'none'"


def render_history_html(target: str, entries: Sequence[Entry], alerts: Sequence[AlertRow], total: int) -> str:
    e_ = html_text
    rows = []
    for e in entries:
        verdict = e.row.verdict or e.row.status
        changes = "".join(f"<li>{e_(c.summary)}</li>" for c in e.changes)
        note = "<ul>" + changes + "</ul>" if changes else ("first run" if e.first and e.row.verdict else "no change")
        if e.row.error:
            note += f"<div>{e_(e.row.error)}</div>"
        rows.append(
            f'<tr class="{"changed" if e.changed else ""}"><td>{e_(_when(e.row.created) or "")}</td>'
            f'<td>{e_(e.row.source)}</td><td class="{e_(verdict)}">{e_(verdict)}</td><td>{note}</td></tr>'
        )
    alert_rows = "".join(
        f"<tr><td>{e_(_when(a.created) or '')}</td><td>{e_(a.status)}</td><td>{e_(a.channel)}</td>"
        f"<td>{e_(a.error or '')}</td></tr>"
        for a in alerts
    )
    alerts_html = (
        f"<h2>Alerts</h2><table><tr><th>when</th><th>status</th><th>channel</th><th>error</th></tr>{alert_rows}</table>"
        if alerts
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>relaycheck history of {e_(target)}</title><style>{STYLE}</style></head><body>"
        f"<h1>History of {e_(target)}</h1><p>{len(entries)} of {total} run(s), newest first; changes are marked.</p>"
        "<table><tr><th>when</th><th>by</th><th>verdict</th><th>what changed</th></tr>"
        + "".join(rows)
        + "</table>"
        + alerts_html
        + "</body></html>\n"
    )
