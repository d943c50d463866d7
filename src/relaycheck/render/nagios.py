"""Monitoring Plugins output (Nagios, Icinga, Zabbix, Checkmk…): one status line, perfdata, long output.

The conventions (monitoring-plugins developer guidelines): exit 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN; the first line of stdout is ``SERVICE STATE - text | perfdata``; the lines after it
are the long output. Perfdata items are ``'label'=value[UOM];[warn];[crit];[min];[max]``.

Here: an open relay is CRITICAL, an undecided target (inconclusive, unreachable, an input that
yields no server) is WARNING, and so is a finding at or above ``warn_severity`` when the operator
asks for it. Every target of a domain counts and the worst state wins. UNKNOWN is kept for what
the guidelines reserve it for: bad arguments and failures inside relaycheck itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from relaycheck.model import Outcome, ProbeKind, Report, Severity, TargetReport, VerdictKind

SERVICE = "RELAY"
MAX_LONG_LINES = 200  # long output beyond this is cut: monitoring systems store it per check result


class State(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class TargetState:
    target: TargetReport
    state: State
    accepted: int  # relay probes accepted
    relay_probes: int  # relay probes that ran (skipped ones not counted)
    findings: tuple[str, ...]  # codes of the findings at or above the warning severity
    where: str  # host:port as shown in the status line and perfdata labels


def at_least(severity: Severity, threshold: Severity | None) -> bool:
    return threshold is not None and severity.rank <= threshold.rank  # rank 0 is the most severe


def target_state(
    t: TargetReport, warn_severity: Severity | None, shared: frozenset[tuple[str, int]] = frozenset()
) -> TargetState:
    relay = [o for o in t.observations if o.kind is ProbeKind.RELAY and o.outcome is not Outcome.SKIPPED]
    accepted = sum(1 for o in relay if o.outcome is Outcome.ACCEPTED)
    loud = tuple(f.code for f in t.findings if at_least(f.severity, warn_severity))
    if t.verdict.kind is VerdictKind.OPEN:
        state = State.CRITICAL
    elif t.verdict.kind is VerdictKind.INCONCLUSIVE or loud:
        state = State.WARNING
    else:
        state = State.OK
    return TargetState(t, state, accepted, len(relay), loud, _where(t, shared))


def target_states(report: Report, warn_severity: Severity | None) -> list[TargetState]:
    shared = shared_hosts(report.targets)
    return [target_state(t, warn_severity, shared) for t in report.targets]


def plugin_state(report: Report, states: list[TargetState]) -> State:
    """The worst state over every target; an input that produced no target is a WARNING."""
    found = [s.state for s in states] + ([State.WARNING] if report.problems else [])
    return max(found, default=State.UNKNOWN)


# -- text -----------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[|\r\n\x00-\x1f\x7f]")


def clean(text: str) -> str:
    """Text on one line, without ``|`` (which would start perfdata; a broken bar stands in for it)."""
    return _UNSAFE.sub(lambda m: "\u00a6" if m.group() == "|" else " ", text).strip()


def indented(text: str, prefix: str) -> list[str]:
    """A multi-line text (a fix with commands) as cleaned long-output lines."""
    return [f"{prefix}{clean(line)}" for line in text.splitlines() if line.strip()]


def perf_label(text: str) -> str:
    """A quoted perfdata label: the guidelines forbid ``'`` and ``=`` inside it."""
    return "'" + re.sub(r"['=|\s]+", "_", text) + "'"


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def perfdata(report: Report, states: Iterable[TargetState]) -> str:
    chosen = list(states)
    accepted = sum(s.accepted for s in chosen)
    total = sum(s.relay_probes for s in chosen)
    count = len(chosen)
    items = [
        f"'accepted'={accepted};;1;0;{total}",
        f"'time'={_number(round(report.duration, 3))}s;;;0",
    ]
    if count > 1 or report.problems:
        open_ = sum(1 for s in chosen if s.target.verdict.kind is VerdictKind.OPEN)
        undecided = sum(1 for s in chosen if s.target.verdict.kind is VerdictKind.INCONCLUSIVE)
        items += [
            f"'targets'={count};;;0",
            f"'open'={open_};;1;0;{count}",
            f"'inconclusive'={undecided};1;;0;{count}",
        ]
        for s in chosen:
            label = perf_label(f"{s.where} accepted")
            items.append(f"{label}={s.accepted};;1;0;{s.relay_probes}")
    return " ".join(items)


def _where(t: TargetReport, shared: frozenset[tuple[str, int]] = frozenset()) -> str:
    """``host:port``; with the address when the host has several (each MX address is a target)."""
    target = t.target
    if (target.host, target.port) in shared and target.address and target.address != target.host:
        return f"{target.host}[{target.address}]:{target.port}"
    return f"{target.host}:{target.port}"


def shared_hosts(targets: Iterable[TargetReport]) -> frozenset[tuple[str, int]]:
    seen: dict[tuple[str, int], int] = {}
    for t in targets:
        key = (t.target.host, t.target.port)
        seen[key] = seen.get(key, 0) + 1
    return frozenset(k for k, n in seen.items() if n > 1)


def _what(s: TargetState) -> str:
    t = s.target
    where = clean(s.where)
    if t.verdict.kind is VerdictKind.OPEN:
        return f"{where} is an open relay ({s.accepted} of {s.relay_probes} probes accepted)"
    if t.verdict.kind is VerdictKind.INCONCLUSIVE:
        if t.error:
            return f"{where} could not be tested: {clean(t.error)}"
        return f"{where} is inconclusive ({clean(t.verdict.confidence)})"
    text = f"{where} is not an open relay ({s.relay_probes} probes refused)"
    if s.findings:
        text += f"; findings: {', '.join(s.findings)}"
    return text


def status_text(report: Report, states: list[TargetState], state: State) -> str:
    if not states:
        if report.problems:
            return "; ".join(f"{clean(p.given)}: {clean(p.problem)}" for p in report.problems)
        return "nothing was tested"
    worst = [s for s in states if s.state is state] or states
    if len(states) == 1:
        text = _what(states[0])
    else:
        counts = {k: sum(1 for s in states if s.target.verdict.kind is k) for k in VerdictKind}
        tally = f"{counts[VerdictKind.OPEN]} open, {counts[VerdictKind.CLOSED]} closed, "
        tally += f"{counts[VerdictKind.INCONCLUSIVE]} inconclusive of {len(states)} targets"
        text = f"{tally}: " + "; ".join(_what(s) for s in worst[:3])
        if len(worst) > 3:
            text += f"; and {len(worst) - 3} more"
    if report.problems and state is not State.CRITICAL:
        text += f"; {len(report.problems)} input(s) not tested"
    return text


def long_output(report: Report, states: list[TargetState], warn_severity: Severity | None) -> list[str]:
    lines: list[str] = []
    for p in report.problems:
        lines.append(f"[WARNING] {clean(p.given)}: not tested: {clean(p.problem)}")
    for s in sorted(states, key=lambda s: -s.state):
        t = s.target
        lines.append(f"[{s.state.name}] {clean(t.target.label)}: {t.verdict.kind} ({t.verdict.confidence})")
        lines.append(f"  {clean(t.verdict.explanation)}")
        if t.verdict.advice:
            lines += ["  What to do:", *indented(t.verdict.advice, "    ")]
        for o in t.observations:
            if o.kind is ProbeKind.RELAY and o.outcome is Outcome.ACCEPTED:
                reply = clean(str(o.reply)) if o.reply else clean(o.reason)
                path = f"MAIL FROM:{clean(o.mail_from)} RCPT TO:{clean(o.rcpt_to)}"
                lines.append(f"  accepted {o.probe_id}: {path} -> {reply}")
        for f in sorted(t.findings, key=lambda f: f.severity.rank):
            mark = " (warning)" if at_least(f.severity, warn_severity) else ""
            lines.append(f"  finding {f.severity} {f.code}{mark}: {clean(f.title)}")
    if len(lines) > MAX_LONG_LINES:
        lines = [*lines[: MAX_LONG_LINES - 1], f"... {len(lines) - MAX_LONG_LINES + 1} more lines cut"]
    return lines


def render_nagios(report: Report, warn_severity: Severity | None = None) -> tuple[str, State]:
    """The plugin output (status line, then long output) and the state to exit with."""
    states = target_states(report, warn_severity)
    state = plugin_state(report, states)
    first = f"{SERVICE} {state.name} - {status_text(report, states, state)} | {perfdata(report, states)}"
    return "\n".join([first, *long_output(report, states, warn_severity)]) + "\n", state


def unknown(message: str) -> str:
    """The status line for a check that could not run (bad arguments, internal error)."""
    return f"{SERVICE} {State.UNKNOWN.name} - {clean(message)}\n"
