"""The Monitoring Plugins output grammar, written from the developer guidelines.

Status line: ``SERVICE STATE - text`` then optionally `` | perfdata``. Perfdata: items separated
by spaces, each ``'label'=value[UOM];[warn];[crit];[min];[max]``: a label with spaces is quoted
and may contain neither ``'`` nor ``=``; the value is in the class ``[-0-9.]`` (or ``U``); UOM is
one of none, s, ms, us, %, B, KB, MB, TB, c; warn and crit are ranges ``[@][start:][end]``
(``~`` for minus infinity); min and max are numbers; trailing unfilled fields may be dropped.
"""

from __future__ import annotations

import re

NUMBER = r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
LABEL = r"(?:'[^'=]+'|[^'=\s|]+)"
UOM = r"(?:s|ms|us|%|B|KB|MB|TB|c)?"
RANGE = rf"@?(?:(?:~|{NUMBER})?:)?(?:{NUMBER})?"
ITEM = rf"{LABEL}=(?:{NUMBER}|U){UOM}(?:;{RANGE}(?:;{RANGE}(?:;(?:{NUMBER})?(?:;(?:{NUMBER})?)?)?)?)?"
PERFDATA = re.compile(rf"{ITEM}(?: {ITEM})*")
STATUS = re.compile(
    r"(?P<service>[A-Z]+) (?P<state>OK|WARNING|CRITICAL|UNKNOWN) - (?P<text>[^|\n]+?)(?: \| (?P<perf>.+))?"
)
ITEM_PARTS = re.compile(rf"(?P<label>{LABEL})=(?P<value>{NUMBER}|U)(?P<uom>{UOM})(?P<rest>\S*)")


def parse_status(line: str) -> tuple[str, str, dict[str, tuple[str, str, list[str]]]]:
    """(state, text, {label: (value, uom, [warn, crit, min, max])}); AssertionError when malformed."""
    match = STATUS.fullmatch(line)
    assert match, f"not a plugin status line: {line!r}"
    perf: dict[str, tuple[str, str, list[str]]] = {}
    if match["perf"] is not None:
        assert PERFDATA.fullmatch(match["perf"]), f"perfdata outside the guidelines' grammar: {match['perf']!r}"
        for item in ITEM_PARTS.finditer(match["perf"]):
            fields = item["rest"].split(";")[1:]
            perf[item["label"].strip("'")] = (item["value"], item["uom"], fields)
    return match["state"], match["text"], perf
