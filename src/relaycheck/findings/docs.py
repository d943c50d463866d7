"""docs/findings.md, generated from the registry: ``python -m relaycheck.findings.docs --write``
rewrites it, ``--check`` exits 1 when it is stale (a unit test does the same)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relaycheck.findings.registry import FindingCode, Source, of_source

AUDIT_FAMILIES = (
    ("any", "Any family"),
    ("postfix", "Postfix"),
    ("exim", "Exim"),
    ("exchange", "Exchange"),
    ("sendmail", "Sendmail"),
    ("opensmtpd", "OpenSMTPD"),
)

INTRO = """\
<!-- Generated from src/relaycheck/findings/codes.toml by `python -m relaycheck.findings.docs --write`:
edit the registry, not this file (a test fails when the two differ). -->

# Findings

Besides the relay verdict, relaycheck reports *findings*: anything else about a server (or a
configuration file) worth telling its admin. Each has a **stable code** (scripts may rely on it:
codes are added, never renamed), a severity, the evidence that shows it (reply texts, names,
codes, configuration lines) and the fix (`remediation` in the JSON report). Every code is defined
once, in `src/relaycheck/findings/codes.toml`; the fixes live in `src/relaycheck/findings/fixes.toml`,
one text per finding and MTA family (Postfix, Exim, Microsoft Exchange, Sendmail, OpenSMTPD,
qmail, Haraka) with a generic fallback, and a live check shows the one for the MTA it detected.
"""

HYGIENE = """\
## Hygiene findings (`relaycheck check`)

Each check can be turned off (see `relaycheck check --help`); a check that did not run produces
no finding, never a "clean" one.
"""

DNSBL = """\
The DNSBL zones, their return codes and which answers count as refusals are data:
`src/relaycheck/dnsbl_zones.toml`. The defaults are Spamhaus ZEN, SpamCop, Barracuda BRBL, PSBL,
Mailspike BL and DroneBL (`--dnsbl-zone` asks other zones instead). SORBS is described but not
queried: it was shut down in June 2024.
"""

VERDICT = """\
## Findings from the relay verdict

The open-relay verdict itself carries its fix as the remediation text for the code `open-relay`
(per MTA family: Postfix `mynetworks`/`smtpd_relay_restrictions`, Exim `relay_from_hosts`/
`acl_check_rcpt`, Exchange receive-connector permissions and `RemoteIPRanges`, Sendmail `access`
database and `promiscuous_relay`, OpenSMTPD `match … action relay`, qmail `rcpthosts`/
`RELAYCLIENT`, Haraka `relay_acl_allow`).
"""

AUDIT = """\
## Configuration findings (`relaycheck audit`)

Besides the common fields, an audit finding has the file and line (`location`) and quotes the
configuration lines that show it (`evidence`). "Relay path" marks the codes that make the
conclusion `open-relay-possible` (exit code 1); see docs/audit.md.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _hygiene_rows(entries: list[FindingCode]) -> list[str]:
    rows = ["| Code | Severity | Meaning | What to do |", "|---|---|---|---|"]
    rows += [f"| `{c.code}` | {c.severity} | {_cell(c.meaning)} | {_cell(c.advice or '')} |" for c in entries]
    return rows


def _verdict_rows(entries: list[FindingCode]) -> list[str]:
    rows = ["| Code | Severity | Meaning |", "|---|---|---|"]
    rows += [f"| `{c.code}` | {c.severity} | {_cell(c.meaning)} |" for c in entries]
    return rows


def _audit_rows(entries: list[FindingCode]) -> list[str]:
    rows = ["| Code | Severity | Relay path | What it catches |", "|---|---|---|---|"]
    rows += [
        f"| `{c.code}` | {c.severity} | {'yes' if c.opens_relay else ''} | **{_cell(c.title)}.** {_cell(c.meaning)} |"
        for c in entries
    ]
    return rows


def render() -> str:
    parts = [INTRO, HYGIENE, "\n".join(_hygiene_rows(of_source(Source.HYGIENE))) + "\n", DNSBL, VERDICT]
    parts.append("\n".join(_verdict_rows(of_source(Source.VERDICT))) + "\n")
    parts.append(AUDIT)
    audit = of_source(Source.AUDIT)
    for family, heading in AUDIT_FAMILIES:
        entries = [c for c in audit if c.family == family]
        if entries:
            parts.append(f"### {heading}\n\n" + "\n".join(_audit_rows(entries)) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relaycheck.findings.docs", description=__doc__)
    parser.add_argument("--write", metavar="FILE", help="write the page to FILE")
    parser.add_argument("--check", metavar="FILE", help="exit 1 when FILE is not what --write would write")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if Path(args.check).read_text(encoding="utf-8") != text:
            print(f"{args.check} is stale: python -m relaycheck.findings.docs --write {args.check}", file=sys.stderr)
            return 1
        return 0
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
