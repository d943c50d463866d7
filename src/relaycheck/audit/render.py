"""Audit reports as text (rich), JSON, Markdown and self-contained HTML.

Every string that came from a configuration file is untrusted: rich markup is escaped in text,
HTML is escaped in HTML and Markdown, and control characters were already neutralised when the
findings were made (``rules.clean``).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding

from relaycheck.audit.model import AuditReport, Conclusion
from relaycheck.audit.rules import opens_relay
from relaycheck.model import Finding, Severity
from relaycheck.render.escape import html_text as esc
from relaycheck.render.escape import md_table, md_text
from relaycheck.render.json import finding_dict
from relaycheck.render.text import SEVERITY_STYLE
from relaycheck.report import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_OPEN

HEADLINE = {
    Conclusion.OPEN_RELAY_POSSIBLE: ("OPEN RELAY POSSIBLE", "bold white on red"),
    Conclusion.NO_OPEN_RELAY_PATH: ("NO OPEN RELAY PATH", "bold white on green"),
    Conclusion.COULD_NOT_PARSE: ("COULD NOT PARSE", "bold black on yellow"),
}
UNPARSED_SHOWN = 5  # without --verbose, a wrong file should not drown the report


def exit_code(report: AuditReport) -> int:
    return {
        Conclusion.OPEN_RELAY_POSSIBLE: EXIT_OPEN,
        Conclusion.NO_OPEN_RELAY_PATH: EXIT_OK,
        Conclusion.COULD_NOT_PARSE: EXIT_INCONCLUSIVE,
    }[report.conclusion]


def _counts(report: AuditReport) -> dict[str, int]:
    counted = Counter(str(f.severity) for f in report.findings)
    return {str(s): counted.get(str(s), 0) for s in Severity}


# ---- text ----------------------------------------------------------------------------------


def render_text(report: AuditReport, *, verbose: bool = False, color: bool = False, width: int = 110) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=color, no_color=not color, width=width, highlight=False, soft_wrap=False)
    label, style = HEADLINE[report.conclusion]
    how = "detected" if report.family_detected else "as requested"
    files = ", ".join(report.files)
    console.print(f"[{style}] {label} [/] [bold]{report.family}[/] ({how}): {escape(files)}")
    console.print(Padding(escape(report.explanation), (0, 0, 0, 2)))
    console.print()
    unparsed = [f for f in report.findings if f.code == "unparsed-line"]
    for item in report.findings:
        if item.code != "unparsed-line":
            _finding_text(console, item)
    shown = unparsed if verbose else unparsed[:UNPARSED_SHOWN]
    for item in shown:
        console.print(f"  [dim]{escape(item.title)}: {escape(item.evidence[0] if item.evidence else '')}[/]")
    if len(unparsed) > len(shown):
        console.print(f"  [dim]… and {len(unparsed) - len(shown)} more unparsed line(s) (--verbose shows them)[/]")
    relay = sum(1 for f in report.findings if opens_relay(f.code))
    counts = ", ".join(f"{n} {s}" for s, n in _counts(report).items() if n)
    console.print(f"[bold]{len(report.findings)} finding(s)[/], {relay} relay path(s){': ' + counts if counts else ''}")
    return "\n".join(line.rstrip() for line in out.getvalue().split("\n"))


def _finding_text(console: Console, item: Finding) -> None:
    style = SEVERITY_STYLE[item.severity]
    where = f"  {escape(item.location)}" if item.location else ""
    marker = " [bold red]relay path[/]" if opens_relay(item.code) else ""
    console.print(f"  [{style}]{item.severity.upper()}[/] [bold]{escape(item.code)}[/]{where}{marker}")
    console.print(Padding(f"[bold]{escape(item.title)}[/]. {escape(item.detail)}", (0, 0, 0, 4)))
    for line in item.evidence:
        console.print(Padding(f"[dim]>[/] {escape(line)}", (0, 0, 0, 4)))
    if item.remediation:
        console.print(Padding(f"[bold]Fix:[/] {escape(item.remediation)}", (0, 0, 0, 4)))
    console.print()


# ---- JSON ----------------------------------------------------------------------------------


def report_dict(report: AuditReport, tool_version: str = "") -> dict[str, Any]:
    return {
        "schema_version": report.schema_version,
        "kind": "audit",
        "tool": {"name": "relaycheck", "version": tool_version},
        "family": str(report.family),
        "family_detected": report.family_detected,
        "files": list(report.files),
        "conclusion": str(report.conclusion),
        "explanation": report.explanation,
        "exit_code": exit_code(report),
        "summary": {
            "findings": len(report.findings),
            "relay_paths": sum(1 for f in report.findings if opens_relay(f.code)),
            "by_severity": _counts(report),
        },
        "findings": [{**finding_dict(f), "opens_relay": opens_relay(f.code)} for f in report.findings],
    }


def render_json(report: AuditReport, tool_version: str = "") -> str:
    return json.dumps(report_dict(report, tool_version), indent=2, ensure_ascii=False) + "\n"


# ---- Markdown ------------------------------------------------------------------------------

def render_markdown(report: AuditReport) -> str:
    label = HEADLINE[report.conclusion][0].lower()
    how = "detected" if report.family_detected else "as requested"
    lines = [
        f"# relaycheck audit: {label}",
        "",
        f"**Mail server:** {report.family} ({how})  ",
        f"**Files:** {', '.join(md_text(f) for f in report.files)}",
        "",
        md_text(report.explanation),
        "",
    ]
    if report.findings:
        rows = [
            [str(f.severity), f.code, f.location or "", "yes" if opens_relay(f.code) else "", f.title]
            for f in report.findings
        ]
        lines.append(md_table(["Severity", "Code", "Location", "Relay path", "Finding"], rows))
        lines += ["", "## Findings", ""]
        for item in report.findings:
            lines += [
                f"### {str(item.severity).upper()} {md_text(item.code)}: {md_text(item.title)}",
                "",
                f"- **Where:** {md_text(item.location or 'not tied to one line')}",
                f"- **What it allows:** {md_text(item.detail)}",
                *(f"- **Evidence:** {md_text(e)}" for e in item.evidence),
                *([f"- **Fix:** {md_text(item.remediation)}"] if item.remediation else []),
                "",
            ]
    else:
        lines += ["No findings.", ""]
    return "\n".join(lines)


# ---- HTML ----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem}.badge{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff;font-weight:bold}
.open-relay-possible{background:#b00020}.no-open-relay-path{background:#1b7f3b}.could-not-parse{background:#b58900}
table{border-collapse:collapse;width:100%}
td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
.critical{color:#b00020;font-weight:bold}.high{color:#d9480f}.medium{color:#a66f00}.low{color:#1864ab}.info{color:#666}
section{border-top:1px solid #ddd;margin-top:1rem}code,pre{background:#f4f4f4;padding:.1rem .3rem;white-space:pre-wrap}
""".strip()


def render_html(report: AuditReport) -> str:
    label = HEADLINE[report.conclusion][0]
    how = "detected" if report.family_detected else "as requested"
    rows = "".join(
        f'<tr><td class="{esc(str(f.severity))}">{esc(str(f.severity))}</td><td><code>{esc(f.code)}</code></td>'
        f"<td>{esc(f.location or '')}</td><td>{'yes' if opens_relay(f.code) else ''}</td><td>{esc(f.title)}</td></tr>"
        for f in report.findings
    )
    sections = "".join(_finding_html(f) for f in report.findings)
    table = (
        "<table><thead><tr><th>Severity</th><th>Code</th><th>Location</th><th>Relay path</th><th>Finding</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
        if report.findings
        else "<p>No findings.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>relaycheck audit: {esc(label.lower())}</title><style>{_CSS}</style></head><body>"
        f'<h1>relaycheck audit <span class="badge {esc(str(report.conclusion))}">{esc(label)}</span></h1>'
        f"<p><strong>Mail server:</strong> {esc(str(report.family))} ({how})<br>"
        f"<strong>Files:</strong> {esc(', '.join(report.files))}</p>"
        f"<p>{esc(report.explanation)}</p>{table}{sections}</body></html>\n"
    )


def _finding_html(item: Finding) -> str:
    evidence = "".join(f"<pre>{esc(e)}</pre>" for e in item.evidence)
    fix = f"<p><strong>Fix:</strong> {esc(item.remediation)}</p>" if item.remediation else ""
    return (
        f'<section><h2><span class="{esc(str(item.severity))}">{esc(str(item.severity).upper())}</span> '
        f"<code>{esc(item.code)}</code> {esc(item.title)}</h2>"
        f"<p><strong>Where:</strong> {esc(item.location or 'not tied to one line')}</p>"
        f"<p>{esc(item.detail)}</p>{evidence}{fix}</section>"
    )

