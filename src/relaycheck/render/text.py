"""Human output with rich: the verdict first, then why, then (``verbose``) every transcript.

Every string that came from a server goes through ``escape`` so that a hostile banner cannot
inject rich markup, and the wire codec has already neutralised terminal control characters.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from relaycheck.boundedio import shorten
from relaycheck.model import (
    ConnectionLog,
    Observation,
    Outcome,
    ProbeKind,
    Report,
    Severity,
    TargetReport,
    VerdictKind,
)
from relaycheck.proof import PROVEN
from relaycheck.render.markdown import reply_column
from relaycheck.report import summarize

HEADLINE = {
    VerdictKind.OPEN: ("OPEN RELAY", "bold white on red"),
    VerdictKind.CLOSED: ("CLOSED", "bold white on green"),
    VerdictKind.INCONCLUSIVE: ("INCONCLUSIVE", "bold black on yellow"),
}
OUTCOME_STYLE = {
    Outcome.ACCEPTED: "red",
    Outcome.REJECTED_POLICY: "green",
    Outcome.REJECTED_OTHER: "cyan",
    Outcome.DEFERRED: "yellow",
    Outcome.ERROR: "magenta",
    Outcome.SKIPPED: "dim",
}


SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}
BANNER_SHOWN = 200  # characters of the greeting in the normal output; -v shows all of it
TABLE_WIDTH = 90  # narrower consoles get the probes as lines, not a table
FIX_SHOWN = {Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM}  # lower ones: with -v


def render_text(report: Report, *, verbose: bool = False, color: bool = False, width: int = 110) -> str:
    out = io.StringIO()
    console = Console(
        file=out, force_terminal=color, no_color=not color, width=width, highlight=False, soft_wrap=False
    )
    for problem in report.problems:
        console.print(f"[bold yellow]cannot test[/] {escape(problem.given)}: {escape(problem.problem)}")
    for target in report.targets:
        _target(console, target, verbose)
    summary = summarize(report)
    console.print(
        f"[bold]{len(report.targets)} target(s):[/] {summary.open} open, {summary.closed} closed, "
        f"{summary.inconclusive} inconclusive"
        + (f", {summary.problems} input problem(s)" if summary.problems else "")
        + f"  ({report.duration:.2f} s, mode: {report.mode})"
    )
    # Padding fills lines to the console width; trailing blanks only get in the way of a reader.
    return "\n".join(line.rstrip() for line in out.getvalue().split("\n"))


def _target(console: Console, t: TargetReport, verbose: bool) -> None:
    label, style = HEADLINE[t.verdict.kind]
    confidence = "" if t.verdict.kind is VerdictKind.INCONCLUSIVE else f" ({t.verdict.confidence})"
    console.print(f"[{style}] {label} [/] [bold]{escape(t.target.label)}[/]{escape(confidence)}")
    if t.target.domain:
        console.print(f"  MX for {escape(t.target.domain)} (preference {t.target.mx_preference})")
    console.print(Padding(escape(t.verdict.explanation), (0, 0, 0, 2)))
    if t.verdict.advice:
        console.print(Padding(f"[bold]What to do:[/] {escape(t.verdict.advice)}", (0, 0, 0, 2)))
    if t.facts.banner is not None:
        banner = str(t.facts.banner)
        console.print(f"  [dim]banner:[/] {escape(banner if verbose else shorten(banner, BANNER_SHOWN))}")
    accepted = [o for o in t.observations if o.kind is ProbeKind.RELAY and o.outcome is Outcome.ACCEPTED]
    if accepted:
        _probes(console, "Relay attempts the server accepted", accepted)
    proven = [o for o in t.observations if o.outcome is Outcome.SKIPPED and o.reason == f"not run: {PROVEN}"]
    if proven:
        console.print(f"  [dim]{len(proven)} more relay probe(s) not run: verdict proven (--exhaustive runs them).[/]")
    arrived = [o for o in accepted if o.delivery is not None and o.delivery.received]
    for o in arrived[:3]:
        assert o.delivery is not None
        console.print(Padding(f"[bold]{o.probe_id} arrived via:[/]", (0, 0, 0, 2)))
        for line in o.delivery.received:
            console.print(Padding(escape(line), (0, 0, 0, 4)))
    identity = t.hygiene.fingerprint if t.hygiene else None
    if identity is not None and identity.family != "unknown":
        version = f" {identity.version}" if identity.version else ""
        console.print(Padding(f"[dim]server software:[/] {escape(identity.family)}{escape(version)}", (0, 0, 0, 2)))
    for finding in sorted(t.findings, key=lambda f: f.severity.rank):
        style = SEVERITY_STYLE[finding.severity]
        console.print(
            Padding(
                f"[{style}]{finding.severity.upper()}[/] [bold]{escape(finding.code)}[/]: {escape(finding.title)}. "
                f"{escape(finding.detail)}",
                (0, 0, 0, 2),
            )
        )
        if finding.remediation and (verbose or finding.severity in FIX_SHOWN):
            console.print(Padding("[bold]Fix:[/] " + escape(finding.remediation), (0, 0, 0, 6)))
    if verbose:
        _probes(console, "Every probe", list(t.observations))
        for log in t.connections:
            _transcript(console, log)
    console.print(
        f"  [dim]{len(t.observations)} probes, {len(t.connections)} connection(s), "
        f"{t.round_trips} round trips, {t.duration:.2f} s[/]"
    )
    console.print()


def _probes(console: Console, title: str, observations: list[Observation]) -> None:
    """A table on a wide console; on a narrow one, each probe on its own lines (a table's
    columns would cut the addresses mid-word)."""
    if console.width >= TABLE_WIDTH:
        console.print(Padding(_probe_table(title, observations), (0, 0, 0, 2)))
        return
    console.print(f"  {title}")
    for o in observations:
        style = OUTCOME_STYLE[o.outcome]
        trick = " (trick)" if o.local_part_trick else ""
        console.print(Padding(f"{o.probe_id} [{style}]{o.outcome}[/]{trick}: {escape(reply_column(o))}", (0, 0, 0, 2)))
        console.print(Padding(escape(f"MAIL FROM {o.mail_from}"), (0, 0, 0, 6)))
        console.print(Padding(escape(f"RCPT TO {o.rcpt_to}"), (0, 0, 0, 6)))


def _probe_table(title: str, observations: list[Observation]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False, pad_edge=False, box=None)
    table.add_column("probe", no_wrap=True)
    table.add_column("MAIL FROM / RCPT TO", overflow="fold")
    table.add_column("reply", overflow="fold")
    table.add_column("outcome", no_wrap=True)
    for o in observations:
        style = OUTCOME_STYLE[o.outcome]
        table.add_row(
            o.probe_id,
            escape(f"{o.mail_from} -> {o.rcpt_to}"),
            escape(reply_column(o)),
            f"[{style}]{o.outcome}[/]" + (" (trick)" if o.local_part_trick else ""),
        )
    return table


def _transcript(console: Console, log: ConnectionLog) -> None:
    tls = " TLS" if log.tls else ""
    console.print(f"  [bold]connection {log.index}[/] ({log.transport}{tls})")
    for exchange in log.exchanges:
        stamp = f"{exchange.at * 1000:7.1f} ms"
        if exchange.sent is not None:
            console.print(f"    [dim]{stamp}[/] C: {escape(exchange.sent)}")
        if exchange.reply is not None:
            for number, line in enumerate(exchange.reply.lines):
                sep = " " if number == len(exchange.reply.lines) - 1 else "-"
                console.print(f"    [dim]{stamp}[/] S: {exchange.reply.code}{sep}{escape(line)}")
        if exchange.note:
            console.print(f"    [dim]{stamp} -- {escape(exchange.note)}[/]")
