"""Monitoring Plugins output (Nagios, Icinga, Zabbix): one status line with perfdata, then the
evidence as long output. The plugin exit code goes with it: ``relaycheck.render.nagios``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaycheck.model import Report
    from relaycheck.render import Style


def check(report: Report, style: Style) -> str:
    from relaycheck.render.nagios import render_nagios

    text, _state = render_nagios(report, style.warn_severity)
    return text
