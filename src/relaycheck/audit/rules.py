"""The auditor's side of the finding registry: its codes (source ``audit`` in
``findings/codes.toml``: severity, title, what the configuration allows, whether it is a relay path
for outside clients; the fix in ``findings/fixes.toml``) and how a finding quotes its lines.

Codes are a promise to users' scripts (like the JSON field names): add codes, never rename them.
``opens_relay`` decides the report's conclusion: one such finding makes the configuration
"open-relay-possible" and the exit code 1.
"""

from __future__ import annotations

import re

from relaycheck.audit.model import Line
from relaycheck.findings import registry
from relaycheck.findings.registry import FindingCode, Source
from relaycheck.model import Finding

# Evidence quotes configuration lines, which may be long or hostile: cap and neutralise them.
EVIDENCE_LIMIT = 300
DETAIL_LIMIT = 1500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def audit_codes() -> dict[str, FindingCode]:
    return {c.code: c for c in registry.of_source(Source.AUDIT)}


def opens_relay(code: str) -> bool:
    found = registry.codes().get(code)
    return found is not None and found.opens_relay


def clean(text: str, limit: int = EVIDENCE_LIMIT) -> str:
    """A file-derived string made safe to show: control characters escaped, length capped."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def finding(code: str, detail: str, *lines: Line, extra_evidence: tuple[str, ...] = ()) -> Finding:
    """A finding of rule ``code``: the rule's plain words, then ``detail``; located at the first line."""
    allows = registry.spec(code).meaning
    evidence = tuple(clean(f"{line.location}: {line.text.strip()}") for line in lines) + tuple(
        clean(e) for e in extra_evidence
    )
    return registry.finding(
        code,
        clean(f"{allows} {detail}".strip(), DETAIL_LIMIT) if detail else allows,
        evidence,
        location=lines[0].location if lines else None,
    )


def dedupe(findings: list[Finding], *, by_detail: bool = False) -> list[Finding]:
    """Each finding once per code and location (and detail, when ``by_detail``), first kept."""
    seen: set[tuple[str, str | None, str]] = set()
    result: list[Finding] = []
    for item in findings:
        key = (item.code, item.location, item.detail if by_detail else "")
        if key not in seen:
            seen.add(key)
            result.append(item)
    return result


def unparsed(line: Line, why: str = "") -> Finding:
    reason = f" ({why})" if why else ""
    return registry.finding(
        "unparsed-line",
        clean(f"Could not parse line {line.number} of {line.source}{reason}; it was ignored."),
        (clean(f"{line.location}: {line.text.strip()}"),),
        title=f"Could not parse line {line.number}",
        location=line.location,
    )
