"""A shareable, self-contained HTML report (one file: inline CSS, no script, nothing fetched).

Same order as the Markdown report: per target the verdict, the fix, the server, the accepted
relay attempts, the findings with their fixes, then every probe and the transcripts folded in
``<details>``. Every dynamic string goes through ``esc`` (``html.escape``), whether it came from
the server or not; the Content-Security-Policy forbids scripts and remote loads as a second
line of defence should an unescaped string ever slip through.
"""

from __future__ import annotations

from collections.abc import Iterable

from relaycheck.findings.fixes import blocks
from relaycheck.model import Finding, Observation, Report, TargetReport, VerdictKind
from relaycheck.render.escape import html_text as esc
from relaycheck.render.markdown import (
    accepted_relays,
    confidence,
    connection_title,
    fix_heading,
    headline,
    mta_label,
    open_relay_fix,
    outcome_column,
    reply_column,
    report_lines,
    server_rows,
    sorted_findings,
    stats_line,
    transcript_lines,
)

VERDICT_CLASS = {VerdictKind.OPEN: "open", VerdictKind.CLOSED: "closed", VerdictKind.INCONCLUSIVE: "inconclusive"}
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'none'; base-uri 'none'"
STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #1b1f23; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .3em; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
h4 { font-size: 1em; margin: 0 0 .4em; }
.meta, .stats, .mx { color: #586069; }
.badge { display: inline-block; padding: .1em .6em; border-radius: 3px; font-weight: 700; color: #fff; }
.open { background: #c62828; } .closed { background: #2e7d32; } .inconclusive { background: #f9a825; color: #000; }
table { border-collapse: collapse; width: 100%; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .3em .5em; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f6f8fa; }
table.server th { width: 9em; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; padding: .6em; overflow-x: auto; white-space: pre-wrap;
      overflow-wrap: anywhere; font: 13px/1.4 ui-monospace, Menlo, Consolas, monospace; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; }
.finding { border-left: 4px solid #999; padding: .4em .8em; margin: 1em 0; background: #fafbfc; }
.sev { display: inline-block; min-width: 5em; font-size: .8em; text-transform: uppercase; font-weight: 700; }
.sev-critical { border-color: #7b1fa2; } .sev-critical .sev { color: #7b1fa2; }
.sev-high { border-color: #c62828; } .sev-high .sev { color: #c62828; }
.sev-medium { border-color: #ef6c00; } .sev-medium .sev { color: #ef6c00; }
.sev-low { border-color: #1565c0; } .sev-low .sev { color: #1565c0; }
.sev-info { border-color: #9e9e9e; } .sev-info .sev { color: #616161; }
.fix { border: 1px solid #c8e6c9; background: #f1f8e9; padding: .2em 1em; margin: 1em 0; }
details { margin: .6em 0; } summary { cursor: pointer; font-weight: 600; }
ul.evidence { margin: .3em 0; } ul.evidence li { font-family: ui-monospace, Menlo, Consolas, monospace;
                                                  font-size: 13px; overflow-wrap: anywhere; }
"""


def render_html(report: Report) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{esc(_title(report))}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        "<h1>relaycheck report</h1>",
    ]
    out += [f'<p class="meta">{esc(line)}</p>' for line in report_lines(report)]
    if report.problems:
        out.append("<h2>Inputs that could not be tested</h2>")
        out.append("<ul>" + "".join(f"<li>{esc(p.given)}: {esc(p.problem)}</li>" for p in report.problems) + "</ul>")
    for t in report.targets:
        out += _target(t)
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _title(report: Report) -> str:
    if len(report.targets) == 1:
        t = report.targets[0]
        return f"relaycheck: {t.target.label}: {headline(t)}"
    return "relaycheck report"


def _target(t: TargetReport) -> list[str]:
    conf = confidence(t)
    out = [
        '<section class="target">',
        f'<h2><span class="badge {VERDICT_CLASS[t.verdict.kind]}">{esc(headline(t))}</span> '
        f"{esc(t.target.label)}" + (f' <span class="meta">({esc(conf)})</span>' if conf else "") + "</h2>",
    ]
    if t.target.domain:
        out.append(f'<p class="mx">MX for {esc(t.target.domain)} (preference {esc(t.target.mx_preference)})</p>')
    if t.error:
        out.append(f"<p><strong>Could not be tested:</strong> {esc(t.error)}</p>")
    out.append(f'<p class="explanation">{esc(t.verdict.explanation)}</p>')
    if t.verdict.advice:
        advice = blocks(t.verdict.advice)  # may be a multi-paragraph fix with commands
        if len(advice) == 1 and not advice[0].verbatim:
            out.append(f'<p class="advice"><strong>What to do:</strong> {esc(advice[0].text)}</p>')
        else:
            out += ['<div class="advice"><p><strong>What to do:</strong></p>', *_blocks(t.verdict.advice), "</div>"]
    fix = open_relay_fix(t)
    if fix:
        mta = mta_label(t)
        out += ['<div class="fix">', f"<h3>How to close the relay{' on ' + esc(mta) if mta else ''}</h3>"]
        out += _blocks(fix)
        out.append("</div>")
    rows = server_rows(t)
    if rows:
        out += ["<h3>Server</h3>", '<table class="server">']
        out += [f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>" for label, value in rows]
        out.append("</table>")
    accepted = accepted_relays(t)
    if accepted:
        out += ["<h3>Relay attempts the server accepted</h3>", *_probe_table(accepted)]
        for o in accepted:
            if o.delivery is not None and o.delivery.received:
                out.append(f"<p>{esc(o.probe_id)} arrived via:</p>")
                out.append(_pre(o.delivery.received))
    if t.findings:
        out.append("<h3>Findings</h3>")
        for f in sorted_findings(t.findings):
            out += _finding(f, t)
    if t.observations:
        out += [f"<details><summary>Every probe ({len(t.observations)})</summary>"]
        out += _probe_table(list(t.observations))
        out.append("</details>")
    if t.connections:
        out.append(f"<details><summary>Transcripts ({len(t.connections)} connection(s))</summary>")
        for log in t.connections:
            out += [f"<h4>{esc(connection_title(log))}</h4>", _pre(transcript_lines(log))]
        out.append("</details>")
    out += [f'<p class="stats">{esc(stats_line(t))}</p>', "</section>"]
    return out


def _probe_table(observations: list[Observation]) -> list[str]:
    out = ["<table>", "<tr><th>probe</th><th>MAIL FROM</th><th>RCPT TO</th><th>reply</th><th>outcome</th></tr>"]
    for o in observations:
        cells = (o.probe_id, o.mail_from, o.rcpt_to, reply_column(o), outcome_column(o))
        out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return out


def _finding(f: Finding, t: TargetReport) -> list[str]:
    severity = str(f.severity)
    out = [
        f'<article class="finding sev-{esc(severity)}">',
        f'<h4><span class="sev">{esc(severity)}</span> {esc(f.title)} <code>{esc(f.code)}</code></h4>',
        f"<p>{esc(f.detail)}</p>",
    ]
    if f.location:
        out.append(f"<p>Location: <code>{esc(f.location)}</code></p>")
    if f.evidence:
        out.append('<ul class="evidence">' + "".join(f"<li>{esc(e)}</li>" for e in f.evidence) + "</ul>")
    if f.remediation:
        out.append(f"<details open><summary>{esc(fix_heading(f, t))}</summary>")
        out += _blocks(f.remediation)
        out.append("</details>")
    out.append("</article>")
    return out


def _blocks(text: str) -> list[str]:
    return [_pre(b.text.splitlines()) if b.verbatim else f"<p>{esc(b.text)}</p>" for b in blocks(text)]


def _pre(lines: Iterable[str]) -> str:
    return "<pre><code>" + "\n".join(esc(line) for line in lines) + "</code></pre>"
