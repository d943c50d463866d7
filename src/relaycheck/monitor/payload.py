"""The alert ``watch`` sends on a change: one versioned JSON document (webhook body, ``--exec``
stdin, attached to the e-mail) and its plain-text form. Pure. Schema: docs/monitoring.md.
"""

from __future__ import annotations

import json
from typing import Any

from relaycheck.history.changes import Change

ALERT_SCHEMA = "relaycheck.alert"
ALERT_SCHEMA_VERSION = 1


def run_summary(check_id: str | None, report: dict[str, Any] | None, verdict: str | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "check_id": check_id,
        "started": report.get("started"),
        "verdict": verdict,
        "exit_code": report.get("summary", {}).get("exit_code"),
        "endpoints": [
            {
                "host": t["target"]["host"],
                "address": t["target"]["address"],
                "port": t["target"]["port"],
                "verdict": t["verdict"]["verdict"],
                "error": t.get("error"),
            }
            for t in report.get("targets", [])
        ],
    }


def alert_payload(
    *,
    target: str,
    given: str,
    before: tuple[str | None, dict[str, Any] | None, str | None],
    after: tuple[str, dict[str, Any], str],
    changes: list[Change],
    sent: str,
    tool_version: str,
) -> dict[str, Any]:
    """``before``/``after``: (check id, report, overall verdict) of the runs compared."""
    before_run = run_summary(*before)
    after_run = run_summary(*after)
    assert after_run is not None
    verdict_before = before_run["verdict"] if before_run else None
    headline = (
        f"{target}: {verdict_before} -> {after_run['verdict']}"
        if verdict_before != after_run["verdict"]
        else (f"{target}: {after_run['verdict']}, {len(changes)} change(s)")
    )
    return {
        "schema": ALERT_SCHEMA,
        "schema_version": ALERT_SCHEMA_VERSION,
        "event": "change",
        "sent": sent,
        "tool": {"name": "relaycheck", "version": tool_version},
        "target": target,
        "input": given,
        "summary": headline,
        "verdict": {"before": verdict_before, "after": after_run["verdict"]},
        "open_relay": after_run["verdict"] == "open",
        "before": before_run,
        "after": after_run,
        "changes": [c.as_dict() for c in changes],
    }


def alert_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def alert_text(payload: dict[str, Any]) -> str:
    """The e-mail body: what changed first, then both runs."""
    lines = [
        f"relaycheck: {payload['summary']}",
        "",
        "What changed:",
        *(f"  - {c['summary']}" for c in payload["changes"]),
        "",
    ]
    for name in ("before", "after"):
        run = payload[name]
        if run is None:
            continue
        lines.append(f"{name.capitalize()} ({run['started']}, check {run['check_id']}): {run['verdict']}")
        for e in run["endpoints"]:
            problem = f" ({e['error']})" if e["error"] else ""
            lines.append(f"  {e['host']} {e['address']} port {e['port']}: {e['verdict']}{problem}")
        lines.append("")
    lines.append("The JSON form of this alert is attached (schema relaycheck.alert, version 1).")
    return "\n".join(lines) + "\n"
