"""Monitoring Plugins output for a check (Nagios, Icinga, Zabbix, Checkmk…): a status line with
perfdata and long output, and the plugin's exit codes (``relaycheck.render.nagios``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaycheck.model import Report
    from relaycheck.render import Style


def check(report: Report, style: Style) -> str:
    from relaycheck.render.nagios import render_nagios

    return render_nagios(report, style.warn_severity)[0]


def check_exit(report: Report, style: Style) -> int:
    from relaycheck.render.nagios import render_nagios

    return int(render_nagios(report, style.warn_severity)[1])
