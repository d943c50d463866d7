"""Renderers: ONE interface for every report (a live check, an audit, a scan summary…) in every
format.

A format is one module in ``relaycheck.render.formats`` named after it; it defines one function
per kind of report it can show, ``def check(report, style) -> str`` (likewise ``audit``,
``scan``), and ``def check_exit(report, style) -> int`` when the format prescribes exit codes of
its own (nagios). Adding a format is adding that module; ``--format`` offers it at once. A
format without a function for some kind of report refuses it with one clear line.

Format modules are imported only when used: ``relaycheck scan`` should not pay for rich or the
HTML renderer.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from relaycheck.errors import UsageError
from relaycheck.model import Severity

DEFAULT_FORMAT = "text"


class ReportKind(StrEnum):
    CHECK = "check"  # relaycheck.model.Report
    AUDIT = "audit"  # relaycheck.audit.model.AuditReport
    SCAN = "scan"  # relaycheck.scan.summary.ScanSummary
    HONEYPOT = "honeypot"  # relaycheck.honeypot.report.Summary
    HISTORY = "history"  # relaycheck.render.history.HistoryReport


@dataclass(frozen=True)
class Style:
    """How a report is wanted, whatever its format."""

    verbose: bool = False  # every probe, transcripts, every unparsed line
    color: bool = False  # terminal colours (text only)
    width: int = 110  # columns of text output (the terminal's, on a terminal)
    warn_severity: Severity | None = None  # findings this severe or worse make a monitoring WARNING (nagios)


@cache
def format_names(kind: ReportKind | None = None) -> tuple[str, ...]:
    """Every format (by module name), or those that can show a ``kind`` of report (format
    modules import nothing heavy until they render)."""
    package = importlib.import_module("relaycheck.render.formats")
    names = {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")}
    if kind is not None:
        names = {n for n in names if hasattr(importlib.import_module(f"{package.__name__}.{n}"), str(kind))}
    return (DEFAULT_FORMAT, *sorted(names - {DEFAULT_FORMAT}))


def chosen_format(fmt: str | None, as_json: bool) -> str:
    """``--format`` and its shorthand ``--json`` (which must not contradict it)."""
    if as_json and fmt not in (None, "json"):
        raise UsageError(f"--json and --format {fmt} contradict each other")
    return "json" if as_json else (fmt or DEFAULT_FORMAT)


def exit_status(kind: ReportKind, report: object, fmt: str, style: Style | None = None) -> int | None:
    """The exit code a format prescribes for a report (``{kind}_exit`` in its module, e.g. the
    Monitoring Plugins codes of nagios), or None: the command's own codes apply."""
    module = importlib.import_module(f"relaycheck.render.formats.{fmt}")
    decide = getattr(module, f"{kind}_exit", None)
    return None if decide is None else int(decide(report, style or Style()))


def render(kind: ReportKind, report: object, fmt: str, style: Style | None = None) -> str:
    """``report`` (of ``kind``) in format ``fmt``; ``UsageError`` for a format that has no such report."""
    if fmt not in format_names():
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(format_names())}")
    module = importlib.import_module(f"relaycheck.render.formats.{fmt}")
    renderer = getattr(module, str(kind), None)
    if renderer is None:
        raise UsageError(f"--format {fmt} has no form for a {kind} report")
    text = renderer(report, style or Style())
    assert isinstance(text, str)
    return text
